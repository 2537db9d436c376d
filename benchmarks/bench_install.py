"""What a fresh install costs: size, package count, time, and each runtime dependency's share.

Creates a new virtualenv in a temporary folder, times ``pip install -e <source>[extras]`` into it,
then, inside that venv, measures:

* the whole install: ``site-packages`` size on disk and the number of distributions (pip and
  setuptools, which every venv has, are not counted);
* per direct runtime dependency of spendwatch: the size of the distribution alone, of everything it
  pulls in (its closure) and of what only it pulls in (what leaving it out saves), the cold import
  time of its top-level modules in a fresh interpreter (median of ``--import-rounds``), and which
  spendwatch modules import it (read from the source with ``ast``; no spendwatch code runs);
* the cold import time of ``spendwatch.cli`` (what every CLI command pays before it does anything).

``--git-ref`` installs another commit of this repository instead of the working tree (exported with
``git archive`` into the temporary folder), so the before and after of a change run in one session:

    python benchmarks/bench_install.py                        # this working tree, runtime only
    python benchmarks/bench_install.py --git-ref main         # the same for another commit
    python benchmarks/bench_install.py --extras gcp-killswitch
    python benchmarks/bench_install.py --no-cache             # downloads every wheel again

pip's wheel cache is used unless ``--no-cache``: the time then measures resolving and unpacking,
not the network. Quote the time as a ratio against a run of the other commit in the same session.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOT_COUNTED = {"pip", "setuptools"}

# Runs inside the new venv: sizes and the dependency graph from the installed metadata (RECORD files and
# Requires-Dist with their markers), and which spendwatch modules import each distribution.
PROBE = r"""
import ast, json, re, sys
from importlib import metadata
from pathlib import Path
from pip._vendor.packaging.requirements import Requirement  # pip is in every venv

source = Path(sys.argv[1])
def norm(name): return re.sub(r"[-_.]+", "-", name).lower()
dists = {}
for dist in metadata.distributions():
    name = norm(dist.metadata["Name"])
    size = 0
    for file in dist.files or []:
        try:
            size += file.locate().stat().st_size
        except OSError:
            pass
    dists[name] = (dist, size)

def requires(name, extras=()):
    dist = dists[name][0]
    out = []
    for text in dist.requires or []:
        req = Requirement(text)
        envs = [{"extra": e} for e in extras] or [{"extra": ""}]
        if req.marker is None or any(req.marker.evaluate(env) for env in envs):
            if norm(req.name) in dists:
                out.append((norm(req.name), tuple(sorted(req.extras))))
    return out

def closure(name, extras=()):
    seen, todo = set(), [(name, extras)]
    while todo:
        n, ex = todo.pop()
        key = (n, ex)
        if key in seen:
            continue
        seen.add(key)
        todo.extend(requires(n, ex))
    return {n for n, _ in seen}

top = requires("spendwatch", tuple(sys.argv[2].split(",")) if sys.argv[2] else ())
everything = closure("spendwatch", tuple(sys.argv[2].split(",")) if sys.argv[2] else ()) - {"spendwatch"}
top_names = sorted({n for n, _ in top})
closures = {n: closure(n, ex) for n, ex in top}
def packages_of(dist):
    # every importable dotted name a distribution installs (google.cloud.compute_v1, not just google)
    names = set()
    for file in dist.files or []:
        parts = file.parts
        if not parts or parts[0] in ("..", "bin") or ".dist-info" in parts[0]:
            continue
        if parts[-1] == "__init__.py":
            names.add(".".join(parts[:-1]))
        elif len(parts) == 1 and parts[0].endswith(".py"):
            names.add(parts[0][:-3])
    return names

mod_to_dist = {}
for name, (dist, _) in dists.items():
    for mod in packages_of(dist):
        mod_to_dist.setdefault(mod, set()).add(name)

users = {}
for path in sorted((source / "spendwatch").rglob("*.py")):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            mods = [node.module] + [node.module + "." + a.name for a in node.names]
        else:
            continue
        for mod in mods:
            parts = mod.split(".")
            for i in range(len(parts), 0, -1):
                hit = mod_to_dist.get(".".join(parts[:i]))
                # the deepest package that one distribution owns (google.cloud is a shared namespace)
                if hit and len(hit) == 1:
                    for d in hit:
                        users.setdefault(d, set()).add(str(path.relative_to(source)))
                    break

def importable(dist):
    # the shallowest packages a distribution installs (google.cloud.compute_v1, not the google namespace)
    pkgs = set()
    for file in dist.files or []:
        parts = file.parts
        if parts[0] in ("..", "bin") or ".dist-info" in parts[0] or parts[0] in ("tests", "docs"):
            continue
        if parts[-1] == "__init__.py":
            pkgs.add(parts[:-1])
        elif len(parts) == 1 and parts[0].endswith(".py") and not parts[0].startswith("_"):
            pkgs.add((parts[0][:-3],))
    if not pkgs:
        return []
    depth = min(len(p) for p in pkgs)
    return sorted(".".join(p) for p in pkgs if len(p) == depth and not p[-1].startswith("_"))

rows = []
for n in top_names:
    mine = closures[n]
    others = set().union(*(c for m, c in closures.items() if m != n)) if len(closures) > 1 else set()
    top_modules = importable(dists[n][0])
    rows.append({
        "name": n,
        "version": dists[n][0].version,
        "own_mb": dists[n][1] / 1e6,
        "closure_mb": sum(dists[d][1] for d in mine) / 1e6,
        "exclusive_mb": sum(dists[d][1] for d in mine - others) / 1e6,
        "exclusive": sorted(mine - others - {n}),
        "modules": top_modules,
        "used_by": sorted(users.get(n, set())),
    })
largest = sorted(((size / 1e6, name) for name, (_, size) in dists.items()), reverse=True)[:15]
print(json.dumps({
    "largest": largest,
    "packages": len([d for d in dists if d not in {"pip", "setuptools"}]),
    "runtime_closure": len(everything) + 1,
    "rows": rows,
}))
"""


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kwargs)  # type: ignore[call-overload, no-any-return]


def export_ref(ref: str, into: Path) -> Path:
    into.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def du_bytes(path: Path) -> int:
    return int(run(["du", "-s", "--block-size=1", str(path)]).stdout.split()[0])


def import_seconds(python: str, module: str, rounds: int) -> float:
    """Median CPU time of ``import module`` in a fresh interpreter, minus an empty interpreter's start.

    CPU seconds (user + system of the child), not wall time: on a shared machine the wall time of a
    one-second import swings with everyone else's load, its CPU time hardly at all.
    """

    def once(code: str) -> float:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([python, "-c", code], check=False, capture_output=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)

    base = sorted(once("pass") for _ in range(rounds))[rounds // 2]
    cost = sorted(once(f"import {module}") for _ in range(rounds))[rounds // 2]
    return max(0.0, cost - base)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--git-ref", help="install this commit of the repository instead of the working tree")
    parser.add_argument("--extras", default="", help="comma-separated extras, e.g. gcp-killswitch")
    parser.add_argument("--no-cache", action="store_true", help="pip --no-cache-dir (downloads every wheel)")
    parser.add_argument("--import-rounds", type=int, default=5)
    parser.add_argument("--skip-imports", action="store_true", help="sizes and time only")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="spendwatch-install-") as tmp:
        root = Path(tmp)
        source = export_ref(args.git_ref, root / "src") if args.git_ref else REPO
        venv = root / "venv"
        run([sys.executable, "-m", "venv", str(venv)])
        python = str(venv / "bin" / "python")
        target = f"{source}[{args.extras}]" if args.extras else str(source)
        pip = [python, "-m", "pip", "install", "-q", "-e", target]
        if args.no_cache:
            pip.insert(4, "--no-cache-dir")
        env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        began = time.perf_counter()
        run(pip, env=env)
        install_s = time.perf_counter() - began
        site = next((venv / "lib").glob("python3*/site-packages"))
        probe = json.loads(run([python, "-c", PROBE, str(source), args.extras]).stdout)
        report = {
            "source": args.git_ref or "working tree",
            "extras": args.extras,
            "install_s": install_s,
            "site_packages_mb": du_bytes(site) / 1e6,
            "venv_mb": du_bytes(venv) / 1e6,
            **probe,
        }
        if not args.skip_imports:
            report["import_cli_s"] = import_seconds(python, "spendwatch.cli", args.import_rounds)
            for row in report["rows"]:
                mods = row["modules"]
                row["import_s"] = import_seconds(python, ", ".join(mods), args.import_rounds) if mods else None
    print_report(report, as_json=args.json)


def print_report(report: dict[str, object], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, indent=2))
        return
    print(
        f"{report['source']} [{report['extras'] or 'runtime'}]: {report['venv_mb']:.0f} MB venv "
        f"({report['site_packages_mb']:.0f} MB site-packages), "
        f"{report['packages']} packages, pip install {report['install_s']:.1f} s"
        + (f", import spendwatch.cli {report['import_cli_s']:.2f} s" if "import_cli_s" in report else "")
    )
    print("largest distributions: " + ", ".join(f"{n} {mb:.0f} MB" for mb, n in report["largest"]))  # type: ignore[attr-defined]
    print(f"{'dependency':<26} {'own MB':>7} {'+deps MB':>8} {'only it':>8} {'import CPU s':>12}  used by")
    rows = sorted(report["rows"], key=lambda r: -r["exclusive_mb"])  # type: ignore[attr-defined]
    for row in rows:
        imp = row.get("import_s")
        used = ", ".join(row["used_by"][:4]) + (f" +{len(row['used_by']) - 4}" if len(row["used_by"]) > 4 else "")
        print(
            f"{row['name'] + ' ' + row['version']:<26} {row['own_mb']:>7.1f} {row['closure_mb']:>8.1f} "
            f"{row['exclusive_mb']:>8.1f} {'-' if imp is None else format(imp, '.2f'):>12}  {used or '(nothing)'}"
        )


if __name__ == "__main__":
    main()
