"""Config loading: valid files load; every kind of mistake is one line naming file, line and key."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from spendwatch.cli import main
from spendwatch.config import config_json_schema, load_config
from spendwatch.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

GOOD = """
store:
  path: data/store.duckdb
  lock_timeout: 30s
sources:
  - name: exports
    type: focus
    path: exports/
    every: 2h
    owner_tags: [owner, team]
monitors:
  - name: by-team
    dimensions: [provider, "tag:team"]
    granularity: [daily, hourly]
    min_impact: 25
"""


def write(tmp_path: Path, text: str, name: str = "spendwatch.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_good_file_loads_with_paths_resolved_against_its_folder(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert config.store.path == (tmp_path / "data" / "store.duckdb").resolve()
    assert config.store.lock_timeout == timedelta(seconds=30)
    source = config.sources[0]
    assert source.type == "focus"
    assert source.every == timedelta(hours=2)
    assert source.path == str((tmp_path / "exports").resolve())  # type: ignore[attr-defined]
    assert config.monitors[0].dimensions == ["provider", "tag:team"]


def test_without_monitors_the_defaults_apply(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "sources:\n  - {name: f, type: focus, path: x}\n"))
    names = [m.name for m in config.monitors]
    assert names == ["provider-total", "account-service", "owner"]


def test_environment_variables_are_interpolated_with_defaults(tmp_path: Path) -> None:
    text = "sources:\n  - name: f\n    type: focus\n    path: ${EXPORTS}/focus\n    every: ${EVERY:-3h}\n"
    config = load_config(write(tmp_path, text), environ={"EXPORTS": "/data"})
    assert config.sources[0].path == "/data/focus"  # type: ignore[attr-defined]
    assert config.sources[0].every == timedelta(hours=3)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "sources:\n  - name: f\n    type: focus\n    pth: x\n",
            ":4: sources[0].pth: unknown key (did you mean 'path'?)",
        ),
        ("sources:\n  - name: f\n    type: focuss\n", ":3: sources[0].type: unknown source type 'focuss'"),
        ("sources:\n  - name: f\n    path: x\n", ":2: sources[0].type: 'type' is required"),
        (
            "sources:\n  - name: f\n    type: focus\n    path: x\n    every: soon\n",
            ":5: sources[0].every: 'soon' is not a duration",
        ),
        (
            "sources:\n  - name: f\n    type: focus\n    path: x\n    enabled: maybe\n",
            ":5: sources[0].enabled: Input should be a valid boolean",
        ),
        (
            "sources:\n  - name: Bad Name\n    type: focus\n    path: x\n",
            ":2: sources[0].name: String should match pattern",
        ),
        ("sources: []\n", ":1: sources: List should have at least 1 item"),
        ("store: {path: x}\n", ":1: sources: required key is missing"),
        (
            "sources:\n  - {name: f, type: focus, path: x}\n  - {name: f, type: focus, path: y}\n",
            "the name 'f' is used twice",
        ),
        (
            "sources:\n  - {name: f, type: focus, path: x}\nmonitors:\n  - name: m\n    dimensions: [provder]\n",
            ":5: monitors[0].dimensions[0]: 'provder' is not a dimension",
        ),
        (
            "sources:\n  - {name: f, type: focus, path: x}\ndetection:\n  severity: {medium: 5000, high: 10}\n",
            ":4: detection.severity: severity thresholds must satisfy medium <= high <= critical",
        ),
        (
            "sources:\n  - name: f\n    type: focus\n    path: ${NOPE}\n",
            ":4: sources[0].path: environment variable NOPE is not set",
        ),
        ("store: [\n", ":2: YAML syntax error"),
        (
            "sources:\n  - {name: f, type: focus, path: x}\nguard:\n  sources: [f]\n",
            "guard.sources: 'f' is not an aws-jobs, gcp-jobs or kubernetes-jobs source (those are: none configured)",
        ),
        ("- just\n- a list\n", "the top level must be a mapping"),
    ],
)
def test_each_mistake_is_one_line_naming_file_line_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    assert expected in message


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nowhere\.yaml: no such config file"):
        load_config(tmp_path / "nowhere.yaml")


def test_cli_validate_exits_2_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, "sources:\n  - name: f\n    type: focus\n    pth: x\n")
    result = CliRunner().invoke(main, ["config", "validate", str(path)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("spendwatch: error: ") and "sources[0].pth" in lines[0]
    assert "Traceback" not in result.output


def test_cli_validate_accepts_a_good_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["config", "validate", str(write(tmp_path, GOOD))])
    assert result.exit_code == 0, result.output
    assert "ok" in result.output and "exports (focus)" in result.output


def test_schema_is_a_json_schema_that_accepts_the_shipped_configs() -> None:
    result = CliRunner().invoke(main, ["config", "schema"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for name in ("demo.yaml", "spendwatch.example.yaml"):
        data = yaml.safe_load((REPO / "config" / name).read_text())
        errors = list(validator.iter_errors(data))
        assert not errors, f"config/{name}: {errors[0].message}"
    assert set(schema["properties"]) >= {"store", "sources", "monitors", "detection"}


def test_schema_rejects_what_validation_rejects() -> None:
    validator = jsonschema.Draft202012Validator(config_json_schema())
    assert list(validator.iter_errors({"sources": [{"name": "f", "type": "focus", "path": "x", "bogus": 1}]}))
    assert list(validator.iter_errors({"sources": [{"name": "f", "type": "nope"}]}))


@pytest.mark.parametrize("name", ["demo.yaml", "spendwatch.example.yaml"])
def test_the_shipped_configs_validate(name: str) -> None:
    config = load_config(
        REPO / "config" / name, environ={"SMTP_PASSWORD": "x", "SLACK_WEBHOOK_URL": "http://127.0.0.1/x"}
    )
    assert config.sources
