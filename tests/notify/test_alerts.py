"""Immediate alerts to a local webhook (Slack-compatible JSON) and SMTP: once per incident/state, retried."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from spendwatch.notify.alerts import run_alerts
from spendwatch.store import Store
from tests.doubles.clock import FixedClock
from tests.doubles.smtp import SmtpServer
from tests.notify.estate import NOW, copy_store, insert_incident, job_link, load, write_config


class Hook:
    """A local webhook receiver; ``fail`` answers with that status instead of 200."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.fail: int | None = None
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if hook.fail:
                    self.send_response(hook.fail)
                    self.end_headers()
                    self.wfile.write(b"no")
                    return
                hook.posts.append(json.loads(body))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    server = Hook()
    yield server
    server.stop()


def setup(tmp_path: Path, estate_store: Path, hook: Hook, smtp: SmtpServer) -> tuple[Any, Store, FixedClock]:
    notify = {
        "from": "spendwatch <spendwatch@example.com>",
        "channels": [
            {"name": "slack", "type": "webhook", "url": hook.url},
            {"name": "mail", "type": "smtp", "host": "127.0.0.1", "port": smtp.port, "security": "none"},
        ],
        "digest": {"channel": "mail", "recipients": ["finops@example.com"]},
        "alerts": {"channels": ["slack"], "min_severity": "high", "retry": {"initial": "1m", "quick_attempts": 1}},
        "routes": [{"name": "ml", "owners": ["ben.okafor@example.com"], "recipients": ["ml-oncall@example.com"]}],
    }
    config = load(write_config(tmp_path, notify=notify))
    copy_store(estate_store, tmp_path)
    clock = FixedClock(NOW)
    return config, Store(config.store.path, clock=clock), clock


@pytest.fixture
def plain_smtp(tmp_path: Path) -> Iterator[SmtpServer]:
    server = SmtpServer(tmp_path)
    yield server
    server.stop()


def test_high_incidents_alert_once_per_channel_and_team_email_follows_the_route(
    tmp_path: Path, estate_store: Path, hook: Hook, plain_smtp: SmtpServer
) -> None:
    config, store, clock = setup(tmp_path, estate_store, hook, plain_smtp)
    evil = insert_incident(store, severity="critical", impact=50_000.0, jobs=json.dumps([job_link(cost=45_000.0)]))

    first = run_alerts(config, store, clock)

    # ben.okafor's incidents also went by email to the ML team (through the digest's email channel).
    team = [r for r in plain_smtp.received() if "ml-oncall@example.com" in r.rcpt_tos]
    assert team and all(r.message["Subject"].startswith("[spendwatch] HIGH") for r in team)
    assert first.failed == 0 and first.sent == len(hook.posts) + len(team) and len(hook.posts) > 1
    assert any("bquxjob_7f3a2c91_runaway" in p["text"] for p in hook.posts)
    evil_post = next(p for p in hook.posts if f"incident #{evil} \u00b7" in p["blocks"][-1]["elements"][0]["text"])
    assert "<script>" not in json.dumps(evil_post) and "&lt;script&gt;" in evil_post["text"]

    second = run_alerts(config, store, clock)
    assert second.sent == 0 and len(hook.posts) + len(plain_smtp.received()) == first.sent  # nothing twice

    # Escalation re-alerts once; de-escalation does not.
    with store.transaction() as con:
        con.execute("UPDATE anomalies SET severity = 'critical' WHERE id <> ? AND severity = 'high'", [evil])
    third = run_alerts(config, store, clock)
    assert third.sent > 0
    with store.transaction() as con:
        con.execute("UPDATE anomalies SET severity = 'high' WHERE id <> ? AND severity = 'critical'", [evil])
    assert run_alerts(config, store, clock).sent == 0


def test_a_failing_webhook_is_recorded_retried_with_backoff_and_reported(
    tmp_path: Path, estate_store: Path, hook: Hook, plain_smtp: SmtpServer
) -> None:
    config, store, clock = setup(tmp_path, estate_store, hook, plain_smtp)
    hook.fail = 503

    failed = run_alerts(config, store, clock)

    assert failed.failed > 0 and hook.posts == []
    rows = store.query("SELECT attempts, next_attempt_at, given_up FROM alert_failures WHERE channel = 'slack'")
    assert rows and all(r == (1, NOW + timedelta(minutes=1), False) for r in rows)
    assert "HTTP 503" in failed.errors[0]

    hook.fail = None
    assert run_alerts(config, store, clock).sent == 0  # not before the backoff
    clock.advance(minutes=2)
    retried = run_alerts(config, store, clock)
    assert retried.sent == len(rows) and len(hook.posts) == len(rows)
    assert store.query("SELECT count(*) FROM alert_failures WHERE channel = 'slack'") == [(0,)]


def test_kill_switch_actions_alert_once_per_state_and_are_marked_notified(
    tmp_path: Path, estate_store: Path, hook: Hook, plain_smtp: SmtpServer
) -> None:
    config, store, clock = setup(tmp_path, estate_store, hook, plain_smtp)
    with store.transaction() as con:
        con.execute("UPDATE anomalies SET severity = 'low'")  # only the action should alert here
        con.execute(
            "INSERT INTO actions (idempotency_key, rule, verb, mode, state, provider, resource_type, resource_id, "
            "account, owner, reason, reversible, planned_at, updated_at) VALUES "
            "('k1', 'gpu-guard', 'stop', 'approve', 'awaiting-approval', 'aws', 'sagemaker-training-job', "
            "'llm-finetune-ben-0412', '210987654321', 'ben.okafor@example.com', 'ran 3 days', TRUE, ?, ?)",
            [NOW, NOW],
        )

    assert run_alerts(config, store, clock).sent == 2  # slack + the ML team's email
    assert "awaiting-approval" in hook.posts[0]["text"] and "llm-finetune-ben-0412" in hook.posts[0]["text"]
    assert store.query("SELECT notified_state FROM actions") == [("awaiting-approval",)]
    assert run_alerts(config, store, clock).sent == 0

    with store.transaction() as con:
        con.execute("UPDATE actions SET state = 'done', updated_at = ?", [NOW])
    assert run_alerts(config, store, clock).sent == 2
    assert "done" in hook.posts[-1]["text"]


def test_a_guard_incident_reads_over_its_cap_and_others_over_expected() -> None:
    from dataclasses import replace

    from spendwatch.notify.alerts import incident_alert
    from spendwatch.notify.config import NotifyConfig
    from spendwatch.store.records import Incident

    base = Incident(
        id=1, monitor="guard:default", granularity="realtime", series_key="k", dimensions={"job": "q1"},
        billing_currency="USD", kind="guard", status="open", severity="high", first_seen=NOW, last_seen=NOW,
        resolved_at=None, peak_at=NOW, peak_actual=700.0, peak_expected=500.0, peak_score=0.0,
        actual_total=700.0, expected_total=500.0, impact=200.0, impact_pct=0.4,
    )  # fmt: skip
    guard = incident_alert(base, NotifyConfig(), ("ops@example.com",))
    spike = incident_alert(replace(base, kind="spike", monitor="svc"), NotifyConfig(), ("ops@example.com",))
    assert "over its cap" in guard.payload["text"] and "over expected" not in guard.payload["text"]
    assert "over expected" in spike.payload["text"]
