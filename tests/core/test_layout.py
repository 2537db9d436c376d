"""The package layout holds: no import circles (even inside functions), every module imports alone, and each
stage's package imports only the stages below it (docs/architecture.md, "Layout")."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "spendwatch"

# Root modules every stage may use: they import no stage package.
LEAVES = frozenset(
    {
        "spendwatch",
        "clock",
        "errors",
        "money",
        "config_types",
        "plugins",
        "secrets",
        "logs",
        "terminal",
        "connections",
        "gcp_rest",
        "k8s_client",
        "forecast",
    }
)

# What each stage's package may import besides the leaves (its command-line modules sit on top and are exempt).
STAGES: dict[str, frozenset[str]] = {
    "store/": frozenset(),
    "collectors/": frozenset({"store/"}),
    "collect": frozenset({"collectors/", "store/"}),
    "detect/": frozenset({"store/"}),
    "killswitch/": frozenset({"collectors/", "detect/", "store/"}),
    "guard/": frozenset({"collectors/", "detect/", "killswitch/", "store/"}),
    "notify/": frozenset({"detect/", "killswitch/", "store/"}),
    "doctor/": frozenset({"collectors/", "killswitch/", "store/"}),
    "daemon/": frozenset({"collect", "detect/", "guard/", "killswitch/", "notify/", "store/"}),
}
_CLI_MODULES = frozenset({"cli", "cli_util", "plugins_cli", "budgets_cli", "__main__"})


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """spendwatch modules ``name`` imports anywhere (functions included), except under ``if TYPE_CHECKING``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            targets.add(base)
            targets.update(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    resolved = set()
    for target in targets:
        found = target
        while found and found not in known:
            found = found.rpartition(".")[0]
        if found and found != name:
            resolved.add(found)
    return resolved


def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {name: _imported(name, path, known) for name, path in known.items()}


def _stage(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "spendwatch"
    return parts[1] + "/" if (PACKAGE / parts[1]).is_dir() else parts[1]


def test_the_graph_sees_imports_inside_functions() -> None:
    digest = _graph()["spendwatch.notify.digest"]
    assert "spendwatch.detect.incidents" in digest  # imported inside build_digest
    assert "spendwatch.notify.teams" in digest  # at module level
    assert "spendwatch.config" not in digest  # only under TYPE_CHECKING: annotations never run


def test_no_module_imports_itself_back_even_inside_a_function() -> None:
    try:
        TopologicalSorter(_graph()).prepare()
    except CycleError as exc:
        pytest.fail("import circle: " + " -> ".join(exc.args[1]))


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_each_stage_imports_only_the_stages_below_it(stage: str) -> None:
    reached: dict[str, list[str]] = {}
    for module, imports in _graph().items():
        if _stage(module) != stage or module.rpartition(".")[2] in _CLI_MODULES:
            continue
        for target in imports:
            other = _stage(target)
            if other != stage and other not in LEAVES and other not in STAGES[stage]:
                reached.setdefault(other, []).append(f"{module} -> {target}")
    assert not reached, f"{stage} reaches above its layer: {reached}"


_ALONE = textwrap.dedent(
    """
    import importlib, json, os, sys
    # Third-party libraries first (the slow part), so each fork only imports spendwatch's own modules.
    for name in sys.argv[2:]:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    failures = {}
    for module in json.loads(sys.argv[1]):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            try:
                importlib.import_module(module)
                code = 0
            except BaseException as exc:
                os.write(write, f"{type(exc).__name__}: {exc}".encode()[:500])
                code = 1
            os._exit(code)
        os.close(write)
        message = os.read(read, 1000).decode()
        os.close(read)
        _, status = os.waitpid(pid, 0)
        if status != 0:
            failures[module] = message or f"exit status {status}"
    print(json.dumps(failures))
    """
)


def _third_party(graph_modules: dict[str, Path]) -> list[str]:
    names: set[str] = set()
    for path in graph_modules.values():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names.add(node.module)
    own = {"spendwatch", "__future__", *sys.stdlib_module_names}
    return sorted(name for name in names if name.split(".")[0] not in own)


@pytest.mark.slow
def test_every_module_imports_alone_in_a_fresh_interpreter() -> None:
    known = _modules()
    modules = sorted(name for name in known if not name.endswith("__main__"))
    result = subprocess.run(
        [sys.executable, "-c", _ALONE, json.dumps(modules), *_third_party(known)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    failures = json.loads(result.stdout.strip().splitlines()[-1])
    assert failures == {}, f"modules that fail when imported first: {failures}"
