"""The hook verb (a real executable, a real local webhook) and the `spendwatch actions` commands."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from spendwatch.cli import main
from spendwatch.killswitch.engine import KillSwitch, run_killswitch
from spendwatch.killswitch.journal import get_action
from spendwatch.store import Store
from tests.killswitch.factories import incident, job, rule, settings

SCRIPT = """
import json, os, sys, pathlib
payload = json.load(sys.stdin)
out = pathlib.Path(sys.argv[1])
out.write_text(json.dumps({"payload": payload, "env_id": os.environ["SPENDWATCH_ACTION_ID"],
                           "phase": os.environ["SPENDWATCH_HOOK_PHASE"]}))
sys.exit(int(sys.argv[2]))
"""


def _hook_rule(tmp_path: Path, exit_code: int = 0, **hook: Any) -> dict[str, Any]:
    script = tmp_path / "hook.py"
    script.write_text(SCRIPT)
    command = [sys.executable, str(script), str(tmp_path / "out.json"), str(exit_code)]
    return rule(
        "page", do="hook", how="enforce", when={"job": {"platforms": ["bigquery"]}}, hook={"command": command, **hook}
    )


def test_command_hook_gets_the_documented_payload(tmp_path: Path, store: Store, ks_clock: Any) -> None:
    config = settings([_hook_rule(tmp_path)])
    record = job("bigquery", "bquxjob_1", provider="gcp", account="analytics", region="US", owner="ana@x.io")
    run = run_killswitch(config, store, ks_clock, jobs=[record])
    [done] = run.executed
    seen = json.loads((tmp_path / "out.json").read_text())
    payload = seen["payload"]
    assert seen["env_id"] == str(done.id) and seen["phase"] == "act"
    assert payload["version"] == 1 and payload["phase"] == "act"
    assert payload["action"] == {
        "id": done.id,
        "rule": "page",
        "verb": "hook",
        "mode": "enforce",
        "planned_at": done.planned_at.isoformat(),
    }
    assert payload["target"]["resource_type"] == "bigquery-job" and payload["target"]["owner"] == "ana@x.io"
    assert payload["job"]["job_id"] == "bquxjob_1" and payload["incident"] is None
    assert "bigquery job" in payload["reason"]


def test_hook_exit_status_is_the_result(tmp_path: Path, store: Store, ks_clock: Any) -> None:
    config = settings([_hook_rule(tmp_path, exit_code=3)])
    run = run_killswitch(config, store, ks_clock, jobs=[job("bigquery", "j2", provider="gcp")])
    [failed] = run.failed
    assert "exited with status 3" in (failed.error or "")


def test_hook_timeout_kills_it(tmp_path: Path, store: Store, ks_clock: Any) -> None:
    spec = rule(
        "slow",
        do="hook",
        how="enforce",
        when={"job": {}},
        hook={"command": [sys.executable, "-c", "import time; time.sleep(30)"], "timeout": "1s"},
    )
    run = run_killswitch(settings([spec]), store, ks_clock, jobs=[job("bigquery", "j3", provider="gcp")])
    [failed] = run.failed
    assert "timed out after 1s" in (failed.error or "")


def test_hook_undo_command(tmp_path: Path, store: Store, ks_clock: Any) -> None:
    script = tmp_path / "hook.py"
    script.write_text(SCRIPT)
    spec = _hook_rule(tmp_path, undo_command=[sys.executable, str(script), str(tmp_path / "undo.json"), "0"])
    config = settings([spec])
    [done] = run_killswitch(config, store, ks_clock, jobs=[job("bigquery", "j4", provider="gcp")]).executed
    assert done.reversible
    KillSwitch(config, store, ks_clock).undo(done.id, "ana")
    assert json.loads((tmp_path / "undo.json").read_text())["phase"] == "undo"


class _Hook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []  # noqa: RUF012
    status = 200

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append({"body": json.loads(body), "auth": self.headers.get("Authorization")})
        self.send_response(type(self).status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *_: Any) -> None:
        return None


@pytest.fixture
def webhook() -> Iterator[tuple[str, type[_Hook]]]:
    handler = type("Hook", (_Hook,), {"received": [], "status": 200})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", handler
    server.shutdown()
    server.server_close()


def test_webhook_posts_payload_and_status_is_the_result(webhook: Any, store: Store, ks_clock: Any) -> None:
    url, handler = webhook
    spec = rule(
        "hook",
        do="hook",
        how="enforce",
        when={"incident": {}},
        hook={"url": url, "headers": {"Authorization": "Bearer t"}},
    )
    run = run_killswitch(settings([spec]), store, ks_clock, incidents=[incident(["i-0123456789abcdef0"])])
    [done] = run.executed
    [call] = handler.received
    assert call["auth"] == "Bearer t"
    assert call["body"]["incident"]["id"] == 1 and call["body"]["target"]["resource_id"] == "i-0123456789abcdef0"
    assert done.result["http_status"] == 200  # type: ignore[index]

    handler.status = 500
    run = run_killswitch(
        settings([spec]), store, ks_clock, incidents=[incident(["i-0123456789abcdef1"], incident_id=2)]
    )
    assert "answered HTTP 500" in (run.failed[0].error or "")


# -- CLI -----------------------------------------------------------------------------------------


@pytest.fixture
def config_file(tmp_path: Path, webhook: Any) -> Path:
    url, _ = webhook
    path = tmp_path / "sw.yaml"
    path.write_text(f"""store:
  path: store.duckdb
sources:
  - name: demo
    type: simulated
killswitch:
  approvers: [lead, ana]
  rules:
    - name: page-owner
      when: {{job: {{platforms: [bigquery]}}}}
      do: hook
      how: approve
      hook: {{url: "{url}"}}
""")
    return path


def test_cli_list_show_approve_reject_pause(config_file: Path, webhook: Any) -> None:
    from spendwatch.clock import SystemClock
    from spendwatch.config import load_config

    ks_clock = SystemClock()  # the CLI reads the real clock; approvals must not look expired to it
    config = load_config(config_file)
    store = Store(config.store.path, clock=ks_clock)
    jobs = [job("bigquery", "a", provider="gcp"), job("bigquery", "b", provider="gcp")]
    first, second = run_killswitch(config, store, ks_clock, jobs=jobs).awaiting_approval
    runner = CliRunner()
    base = ["--config", str(config_file), "actions"]

    listed = runner.invoke(main, [*base, "list", "--state", "awaiting-approval"])
    assert listed.exit_code == 0 and "awaiting-approval" in listed.output and "hook bigquery-job a" in listed.output

    approved = runner.invoke(main, [*base, "approve", str(first.id), "--as", "lead"])
    assert approved.exit_code == 0, approved.output
    assert f"action {first.id}: done" in approved.output
    assert get_action(store, first.id).decided_by == "lead"

    rejected = runner.invoke(main, [*base, "reject", str(second.id), "--as", "ana", "--note", "mine"])
    assert rejected.exit_code == 0 and "rejected by ana" in rejected.output

    shown = runner.invoke(main, [*base, "show", str(first.id)])
    assert "approved" in shown.output and "lead" in shown.output and "webhook answered HTTP 200" in shown.output

    again = runner.invoke(main, [*base, "approve", str(first.id), "--as", "lead"])
    assert again.exit_code == 2 and "only an action awaiting approval" in again.output

    missing = runner.invoke(main, [*base, "show", "999"])
    assert missing.exit_code == 2 and "no action with id 999" in missing.output

    bad_state = runner.invoke(main, [*base, "list", "--state", "bogus"])
    assert bad_state.exit_code == 2 and "not a state" in bad_state.output

    undo = runner.invoke(main, [*base, "undo", str(first.id)])
    assert undo.exit_code == 2 and "cannot be undone" in undo.output

    assert runner.invoke(main, [*base, "pause", "--as", "oncall"]).exit_code == 0
    status = runner.invoke(main, [*base, "status"])
    assert "PAUSED by oncall" in status.output
    assert run_killswitch(config, store, ks_clock, jobs=[job("bigquery", "c", provider="gcp")]).paused
    assert runner.invoke(main, [*base, "resume-all"]).exit_code == 0
    assert "active" in runner.invoke(main, [*base, "status"]).output

    as_json = runner.invoke(main, [*base, "list", "--json"])
    assert {json.loads(line)["state"] for line in as_json.output.splitlines()} == {"done", "rejected"}
