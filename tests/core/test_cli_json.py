"""``--json`` on every command that prints records, and shell completion scripts from Click."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from spendwatch.cli import main
from spendwatch.store import Store
from tests.notify.estate import insert_incident

# Commands that print no records: they are the records' producers' front ends (a daemon, a demo that
# prints a story), or already print JSON (the schema). Every other command must take --json.
NO_RECORDS = {"demo", "run", "config schema"}


def _commands(group: click.Group, prefix: str = "") -> dict[str, click.Command]:
    found: dict[str, click.Command] = {}
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        if isinstance(command, click.Group):
            found.update(_commands(command, path + " "))
        else:
            found[path] = command
    return found


def test_every_command_that_prints_records_takes_json() -> None:
    commands = _commands(main)
    lacking = {path for path, c in commands.items() if not any("--json" in getattr(p, "opts", ()) for p in c.params)}
    assert lacking <= NO_RECORDS, f"add --json to: {sorted(lacking - NO_RECORDS)}"
    assert set(commands) >= NO_RECORDS


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli")
    (folder / "sw.yaml").write_text(
        "store: {path: s.duckdb}\nsources:\n  - {name: sim, type: simulated, days: 14, end: '2026-11-20T00:00:00Z'}\n"
        "killswitch: {approvers: [lead]}\n"
    )
    return folder


def run(site: Path, *args: str, code: int = 0) -> Any:
    result = CliRunner().invoke(main, ["-c", str(site / "sw.yaml"), *args, "--json"], catch_exceptions=False)
    assert result.exit_code == code, result.output
    return json.loads(result.stdout)


def test_collect_detect_feedback_export_and_store_print_json(site: Path) -> None:
    [collected] = run(site, "collect")
    assert collected["source"] == "sim" and collected["ok"] and collected["cost_lines"] > 0

    detected = run(site, "detect")
    assert detected["series_scored"] > 0 and {m["monitor"] for m in detected["monitors"]}

    incident = insert_incident(Store(site / "s.duckdb"))
    acked = run(site, "anomalies", "ack", str(incident), "--as", "ana@example.com")
    assert (acked["id"], acked["status"], acked["feedback_by"]) == (incident, "acknowledged", "ana@example.com")
    expected = run(site, "anomalies", "expected", str(incident))
    assert expected["status"] == "expected" and expected["culprit"]

    exported = run(site, "costs", "export", "-o", str(site / "out.parquet"))
    assert exported["rows"] == collected["cost_lines"] and exported["focus_version"] == "1.0"
    assert exported["metadata_path"].endswith("out.parquet.metadata.json")

    snapshot = run(site, "store", "snapshot")
    assert Path(snapshot["path"]).is_file() and snapshot["taken_at"].endswith("+00:00")
    checked = run(site, "store", "check", "--snapshots")
    assert checked["ok"] and checked["rows"]["cost_lines"] == collected["cost_lines"]
    assert [s["ok"] for s in checked["snapshots"]] == [True]
    restored = run(site, "store", "restore", "--force")
    assert restored["snapshot"] == snapshot["path"] and restored["damaged_copy"]

    validated = run(site, "config", "validate", str(site / "sw.yaml"))
    assert validated["valid"] and validated["sources"] == [{"name": "sim", "type": "simulated", "enabled": True}]


def test_a_failing_command_still_says_why_on_stderr(site: Path) -> None:
    result = CliRunner().invoke(main, ["-c", str(site / "sw.yaml"), "anomalies", "ack", "999999", "--json"])
    assert result.exit_code == 2 and result.stdout == "" and "no anomaly with id 999999" in result.stderr


def test_backtest_prints_json(tmp_path: Path) -> None:
    rows = ["series_id,timestamp,cost"] + [f"a,2026-10-{d:02d},{100 + (900 if d == 28 else 0)}" for d in range(1, 31)]
    (tmp_path / "in.csv").write_text("\n".join(rows) + "\n")
    result = CliRunner().invoke(main, ["backtest", str(tmp_path / "in.csv"), "-o", str(tmp_path / "f.csv"), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["series"], data["steps"], data["granularity"], data["decisions"]) == (1, 30, "daily", 30)


@pytest.mark.parametrize(("shell", "marker"), [("bash", "complete -o nosort -F"), ("zsh", "#compdef spendwatch"),
                                               ("fish", "complete --no-files --command spendwatch")])  # fmt: skip
def test_shell_completion_scripts_are_produced(shell: str, marker: str) -> None:
    script = Path(sys.executable).with_name("spendwatch")
    env = {**os.environ, "_SPENDWATCH_COMPLETE": f"{shell}_source"}
    result = subprocess.run([str(script)], env=env, capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    assert marker in result.stdout and "_SPENDWATCH_COMPLETE" in result.stdout


def test_completion_offers_commands_and_options() -> None:
    script = Path(sys.executable).with_name("spendwatch")
    env = {
        **os.environ,
        "_SPENDWATCH_COMPLETE": "bash_complete",
        "COMP_WORDS": "spendwatch costs export --",
        "COMP_CWORD": "3",
    }
    result = subprocess.run([str(script)], env=env, capture_output=True, text=True, check=False, timeout=120)
    assert {"plain,--output", "plain,--json"} <= set(result.stdout.split())
    env.update(COMP_WORDS="spendwatch pl", COMP_CWORD="1")
    result = subprocess.run([str(script)], env=env, capture_output=True, text=True, check=False, timeout=120)
    assert result.stdout.split() == ["plain,plugins"]


def test_kill_switch_commands_print_json(site: Path) -> None:
    store = Store(site / "s.duckdb")
    with store.transaction() as con:
        found = con.execute(
            "INSERT INTO actions (idempotency_key, rule, verb, mode, state, provider, resource_type, resource_id, "
            "account, owner, reason, reversible, planned_at, updated_at) VALUES ('json-k1', 'gpu-guard', 'stop', "
            "'approve', 'awaiting-approval', 'aws', 'sagemaker-training-job', 'llm-finetune', '210987654321', "
            "'ben@example.com', 'ran 3 days', TRUE, now(), now()) RETURNING id"
        ).fetchone()
    assert found is not None
    rejected = run(site, "actions", "reject", str(found[0]), "--as", "lead", "--note", "needed")
    assert (rejected["id"], rejected["state"], rejected["target"]["resource_id"]) == (
        found[0],
        "rejected",
        "llm-finetune",
    )
    pause = run(site, "actions", "pause", "--as", "lead")
    assert (pause["paused"], pause["by"]) == (True, "lead")
    paused = run(site, "actions", "run")
    assert paused["paused"] is True and paused["executed"] == []
    assert run(site, "actions", "resume-all")["paused"] is False
    ran = run(site, "actions", "run")
    assert ran["paused"] is False and {"planned", "skipped", "failed"} <= set(ran)
