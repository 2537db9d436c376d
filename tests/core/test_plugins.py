"""Entry-point plugins, in process: loaded only when named, errors that name the package, no start-up scan.

Each test puts a fake installed distribution (a ``.dist-info`` folder with ``entry_points.txt``, and
its module) on ``sys.path``; the ``isolated`` fixture restores the registries, the imported modules
and the config models afterwards, so no plugin leaks into other tests.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

import spendwatch.config as config_module
from spendwatch.collectors.base import SOURCES
from spendwatch.config import config_json_schema, parse_config, prepare_plugins
from spendwatch.errors import ConfigError
from spendwatch.killswitch.base import ACTIONS, RESOURCE_TYPES
from spendwatch.killswitch.targets import PLATFORM_TYPES
from spendwatch.notify.channels import CHANNELS, build_channel
from spendwatch.plugins import Registry, forget_discovered

REPO = Path(__file__).resolve().parents[2]
ENTRY_POINTS = """\
[spendwatch.sources]
tiny-ledger = spendwatch_tinyplugin

[spendwatch.channels]
tiny-log = spendwatch_tinyplugin

[spendwatch.actions]
tiny-vm-park = spendwatch_tinyplugin:TinyVmPark
"""


def _snapshot(registry: Registry[Any]) -> dict[str, Any]:
    return {k: (dict(v) if isinstance(v, dict) else set(v) if isinstance(v, set) else v)
            for k, v in vars(registry).items()}  # fmt: skip


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    saved = {registry: _snapshot(registry) for registry in (SOURCES, CHANNELS, ACTIONS)}
    resource_types, platform_types = dict(RESOURCE_TYPES), dict(PLATFORM_TYPES)
    modules = set(sys.modules)
    forget_discovered()
    yield
    for registry, state in saved.items():
        vars(registry).update(state)
        registry.generation += 1000  # differs from what the models were built with: they rebuild below
    RESOURCE_TYPES.clear()
    RESOURCE_TYPES.update(resource_types)
    PLATFORM_TYPES.clear()
    PLATFORM_TYPES.update(platform_types)
    for name in set(sys.modules) - modules:
        if name.startswith("spendwatch_"):
            del sys.modules[name]
    forget_discovered()
    prepare_plugins({})


def install(site: Path, monkeypatch: pytest.MonkeyPatch, *, module: str, entry_points: str, name: str = "tiny") -> None:
    """A distribution ``name`` 1.0 in ``site`` with ``entry_points``, and ``module`` as its code."""
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(entry_points)
    (site / "spendwatch_tinyplugin.py").write_text(module)
    monkeypatch.syspath_prepend(str(site))
    forget_discovered()


def tiny_module() -> str:
    return (REPO / "tests" / "doubles" / "tinyplugin.py").read_text()


CONFIG = """\
store: {path: s.duckdb}
sources:
  - {name: lab, type: tiny-ledger, path: ledger.csv}
notify:
  channels:
    - {name: log, type: tiny-log, path: alerts.jsonl}
"""


def test_a_config_naming_plugin_types_loads_them_and_validates_their_keys(
    isolated: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(tmp_path / "site", monkeypatch, module=tiny_module(), entry_points=ENTRY_POINTS)
    config = parse_config(CONFIG, tmp_path / "sw.yaml", environ={})
    assert type(config.sources[0]).__name__ == "TinyLedgerConfig"
    assert config.sources[0].path == tmp_path / "ledger.csv"  # type: ignore[attr-defined]
    channel = build_channel(config.notify.channels[0])
    assert type(channel).__name__ == "TinyLog"
    assert SOURCES.origin("tiny-ledger") == CHANNELS.origin("tiny-log") == "tiny 1.0"
    with pytest.raises(ConfigError, match=r"sw.yaml:3: sources\[0\].currency: Input should be a valid string"):
        parse_config(CONFIG.replace("path: ledger.csv", "path: x, currency: 7"), tmp_path / "sw.yaml", environ={})


def test_a_config_of_built_in_types_reads_no_entry_points(
    isolated: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(**_: Any) -> Any:
        raise AssertionError("entry points were read for a config that names only built-in types")

    monkeypatch.setattr(metadata, "entry_points", refuse)
    config = parse_config(
        "sources:\n  - {name: f, type: focus, path: x.csv}\nnotify:\n  channels:\n    - {name: d, type: folder, path: out}\n"
        "killswitch:\n  rules: []\n",
        tmp_path / "sw.yaml",
        environ={},
    )
    assert config.sources[0].type == "focus"


def test_importing_spendwatch_reads_no_entry_points(tmp_path: Path) -> None:
    """A fresh interpreter: importing the CLI and the config module scans no spendwatch plugin group."""
    import subprocess

    probe = (
        "import importlib.metadata as m\n"
        "real = m.entry_points\n"
        "def refuse(**k):\n"
        "    if str(k.get('group', '')).startswith('spendwatch'):\n"
        "        raise SystemExit('entry points read at import')\n"
        "    return real(**k)\n"  # pydantic reads its own plugin group; only ours must wait
        "m.entry_points = refuse\n"
        "import spendwatch.cli, spendwatch.config, spendwatch.notify.alerts, spendwatch.killswitch.config\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False, cwd=tmp_path)
    assert result.stdout.strip() == "ok", result.stderr


def test_a_broken_plugin_is_one_line_naming_the_package(
    isolated: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(tmp_path / "site", monkeypatch, module="import no_such_module_anywhere\n", entry_points=ENTRY_POINTS)
    with pytest.raises(ConfigError) as caught:
        parse_config(CONFIG, tmp_path / "sw.yaml", environ={})
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'sw.yaml'}: source type plugin 'tiny-ledger' (entry point ")
    assert "from tiny 1.0) cannot be loaded: ModuleNotFoundError: No module named 'no_such_module_anywhere'" in message
    assert "\n" not in message


def test_a_plugin_that_registers_another_name_is_refused(
    isolated: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = tiny_module().replace('@SOURCES.register("tiny-ledger")', '@SOURCES.register("tiny-ledgr")')
    install(tmp_path / "site", monkeypatch, module=module, entry_points=ENTRY_POINTS)
    with pytest.raises(ConfigError, match="registered no source type named 'tiny-ledger'"):
        parse_config(CONFIG, tmp_path / "sw.yaml", environ={})


def test_a_plugin_cannot_take_a_built_in_name(
    isolated: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    install(tmp_path / "site", monkeypatch, module=tiny_module(), entry_points="[spendwatch.sources]\nfocus = x.y\n")
    assert SOURCES.load_plugins() == []
    assert SOURCES.origin("focus") == "built-in"
    assert "source type plugin 'focus' from tiny 1.0 is ignored: built-in already provides that name" in caplog.text
    status = {i.name: i.status for i in SOURCES.plugin_infos() if i.origin != "built-in"}
    assert status == {"focus": "shadowed by built-in"}


def test_the_json_schema_lists_every_installed_plugin(
    isolated: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(tmp_path / "site", monkeypatch, module=tiny_module(), entry_points=ENTRY_POINTS)
    schema = config_json_schema()
    assert schema["properties"]["sources"]["items"]["discriminator"]["mapping"]["tiny-ledger"].endswith(
        "/TinyLedgerConfig"
    )
    options = schema["$defs"]["Rule"]["properties"]["options"]["anyOf"]
    assert {"$ref": "#/$defs/ParkOptions", "description": "options of the tiny-vm-park action"} in options
    assert RESOURCE_TYPES["tiny-vm"] == "tinycloud" and PLATFORM_TYPES["tinycloud-vm"] == "tiny-vm"


def test_the_isolation_left_no_plugin_behind() -> None:
    """Guard for the fixture: after the tests above (same module, same worker), only built-ins remain."""
    assert "tiny-ledger" not in SOURCES and "tiny-log" not in CHANNELS and "tiny-vm-park" not in ACTIONS
    with pytest.raises(ConfigError, match="unknown source type 'tiny-ledger'"):
        parse_config(CONFIG, Path("sw.yaml"), environ={})
    assert {"sources": SOURCES.generation, "channels": CHANNELS.generation} == config_module._BUILT_WITH
