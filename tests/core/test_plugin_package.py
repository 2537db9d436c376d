"""A third-party plugin package, installed for real: entry points, config validation, JSON Schema, collect.

The package (``tests/doubles/tinyplugin.py`` plus a ``pyproject.toml`` declaring its entry points) is
pip-installed, offline, into a fresh virtualenv made for this module (``--system-site-packages``
gives it the suite's dependencies), next to spendwatch installed editable from this checkout. Each
check then runs that venv's own ``spendwatch`` command, as a user would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from spendwatch.store import Store

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "spendwatch-tinyplugin"
version = "1.0"
requires-python = ">=3.11"
dependencies = ["spendwatch"]

[project.entry-points."spendwatch.sources"]
tiny-ledger = "spendwatch_tinyplugin"

[project.entry-points."spendwatch.channels"]
tiny-log = "spendwatch_tinyplugin"

[project.entry-points."spendwatch.actions"]
tiny-vm-park = "spendwatch_tinyplugin:TinyVmPark"

[tool.setuptools]
py-modules = ["spendwatch_tinyplugin"]
"""
LEDGER = "day,account,service,cost\n2026-10-30,lab-1,vm,12.5\n2026-10-31,lab-1,vm,13.5\n2026-11-01,lab-2,disk,4.25\n"


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_INDEX_URL", "VIRTUAL_ENV")}
    env["PIP_NO_INPUT"] = "1"
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with spendwatch (editable, this checkout) and the plugin package installed."""
    root = tmp_path_factory.mktemp("plugin")
    package = root / "tinyplugin"
    package.mkdir()
    (package / "pyproject.toml").write_text(PYPROJECT)
    shutil.copy(REPO / "tests" / "doubles" / "tinyplugin.py", package / "spendwatch_tinyplugin.py")
    env_dir = root / "venv"
    made = _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(env_dir)], root)
    assert made.returncode == 0, made.stderr
    python = env_dir / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "--quiet"]
    pip.append("--disable-pip-version-check")
    for target in (["-e", str(REPO)], [str(package)]):
        installed = _run([*pip, *target], root)
        assert installed.returncode == 0, installed.stdout + installed.stderr
    return env_dir


def _config(folder: Path, *, source: dict[str, object] | None = None, options: dict[str, object] | None = None) -> Path:
    (folder / "ledger.csv").write_text(LEDGER)
    data = {
        "store": {"path": "store.duckdb"},
        "sources": [{"name": "lab", "type": "tiny-ledger", "path": "ledger.csv", "backfill": "3650d", **(source or {})}],
        "notify": {"channels": [{"name": "log", "type": "tiny-log", "path": "alerts.jsonl"}]},
        "killswitch": {
            "rules": [{"name": "park-idle", "when": {"job": {"platforms": ["tinycloud-vm"], "min_runtime": "1h"}},
                       "do": "park", "how": "dry-run", "options": options or {"grace_minutes": 10}}]
        },
    }  # fmt: skip
    path = folder / "spendwatch.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_a_plugin_package_validates_collects_and_joins_the_schema(venv: Path, tmp_path: Path) -> None:
    spendwatch = str(venv / "bin" / "spendwatch")
    config = _config(tmp_path)

    validated = _run([spendwatch, "config", "validate", str(config)], tmp_path)
    assert validated.returncode == 0, validated.stderr
    assert "sources: lab (tiny-ledger)" in validated.stdout

    collected = _run([spendwatch, "-c", str(config), "collect"], tmp_path)
    assert collected.returncode == 0, collected.stderr
    assert "lab: 3 cost line(s) in 2 period(s)" in collected.stdout
    rows = Store(tmp_path / "store.duckdb").query(
        "SELECT provider, sub_account_id, billing_currency, sum(billed_cost) FROM cost_lines GROUP BY ALL ORDER BY 2"
    )
    assert rows == [("tinycloud", "lab-1", "EUR", 26.0), ("tinycloud", "lab-2", "EUR", 4.25)]

    schema = json.loads(_run([spendwatch, "config", "schema"], tmp_path).stdout)
    assert {"TinyLedgerConfig", "TinyLogConfig", "ParkOptions"} <= set(schema["$defs"])
    source_types = schema["properties"]["sources"]["items"]["discriminator"]["mapping"]
    assert source_types["tiny-ledger"] == "#/$defs/TinyLedgerConfig" and "focus" in source_types
    channel_types = schema["$defs"]["NotifyConfig"]["properties"]["channels"]["items"]["discriminator"]["mapping"]
    assert channel_types["tiny-log"] == "#/$defs/TinyLogConfig" and "smtp" in channel_types

    listed = json.loads(_run([spendwatch, "plugins", "list", "--json"], tmp_path).stdout)
    mine = {(p["kind"], p["name"]): p for p in listed if p["origin"] != "built-in"}
    assert set(mine) == {("source type", "tiny-ledger"), ("channel type", "tiny-log"), ("action", "tiny-vm-park")}
    assert all(p["status"] == "loaded" and p["origin"] == "spendwatch-tinyplugin 1.0" for p in mine.values())


def test_a_plugin_config_error_names_the_file_line_and_key(venv: Path, tmp_path: Path) -> None:
    spendwatch = str(venv / "bin" / "spendwatch")
    config = _config(tmp_path, source={"colour": "blue"})
    bad_key = _run([spendwatch, "config", "validate", str(config)], tmp_path)
    line = next(n for n, text in enumerate(config.read_text().splitlines(), 1) if "colour:" in text)
    assert bad_key.returncode == 2 and "Traceback" not in bad_key.stderr
    assert f"{config}:{line}: sources[0].colour: unknown key" in bad_key.stderr

    config = _config(tmp_path, options={"grace_minutes": 99})
    bad_option = _run([spendwatch, "config", "validate", str(config)], tmp_path)
    assert bad_option.returncode == 2
    assert "options for tiny-vm-park: grace_minutes" in bad_option.stderr, bad_option.stderr


def test_without_the_package_the_type_is_unknown(tmp_path: Path) -> None:
    """The suite's own venv does not have the plugin: the same config is one clear line, exit 2."""
    config = _config(tmp_path)
    result = _run([sys.executable, "-m", "spendwatch", "config", "validate", str(config)], tmp_path)
    assert result.returncode == 2
    assert "sources[0].type: unknown source type 'tiny-ledger' (known: aws-cost-explorer," in result.stderr
    assert "plugins: `spendwatch plugins list`" in result.stderr
