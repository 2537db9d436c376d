"""PagerDuty (Events API v2) against a local service that checks every event against the documented schema.

An incident is one PagerDuty alert keyed by the incident: trigger when it opens, acknowledge when it is
acknowledged, resolve when it is over, and trigger again if it comes back; kill-switch approvals page
and resolve once settled. Severity is mapped; text is escaped; the routing key never leaves the request.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from spendwatch.config import Config
from spendwatch.detect.incidents import give_feedback
from spendwatch.errors import ConfigError
from spendwatch.notify.alerts import action_alert, incident_alert, run_alerts
from spendwatch.notify.channels import ChannelError
from spendwatch.notify.config import NotifyConfig
from spendwatch.notify.pagerduty import PagerDutyChannel, PagerDutyChannelConfig
from spendwatch.store import Store
from tests.doubles.clock import FixedClock
from tests.doubles.pagerduty import PagerDuty, event_errors
from tests.notify.estate import NOW, copy_store, insert_incident, load, write_config
from tests.security.detectors import chat_injections
from tests.security.records import hostile_action, hostile_incident

KEY = "R0UT1NGkey0123456789abcdefABCDEF"  # 32 letters and digits, as PagerDuty's integration keys are
HOSTILE = "@channel <!here> [click](https://evil.example) ![x](https://evil.example/p.png) <at>all</at>\u202e\nx"


@pytest.fixture
def pagerduty() -> Iterator[PagerDuty]:
    server = PagerDuty()
    yield server
    server.stop()


def channel(url: str, **extra: Any) -> PagerDutyChannel:
    config = PagerDutyChannelConfig.model_validate(
        {"name": "pager", "type": "pagerduty", "routing_key": KEY, "url": url, **extra}
    )
    return PagerDutyChannel(config)


def setup(tmp_path: Path, estate_store: Path, pagerduty: PagerDuty) -> tuple[Config, Store, FixedClock]:
    notify = {
        "channels": [{"name": "pager", "type": "pagerduty", "routing_key": "${PD_ROUTING_KEY}", "url": pagerduty.url}],
        "alerts": {"channels": ["pager"], "min_severity": "high", "retry": {"initial": "1m", "quick_attempts": 1}},
    }
    config = load(write_config(tmp_path, notify=notify), environ={"PD_ROUTING_KEY": KEY})
    copy_store(estate_store, tmp_path)
    clock = FixedClock(NOW)
    return config, Store(config.store.path, clock=clock), clock


# -- the double ------------------------------------------------------------------------------------------


def test_the_double_refuses_what_pagerduty_refuses() -> None:
    good = {
        "routing_key": KEY, "event_action": "trigger", "dedup_key": "spendwatch:incident:1",
        "payload": {"summary": "s", "source": "aws/1", "severity": "error", "timestamp": "2026-11-20T09:30:00+00:00",
                    "custom_details": {"a": 1}},
        "links": [{"href": "https://spendwatch.example.com", "text": "spendwatch"}], "client": "spendwatch",
    }  # fmt: skip
    assert event_errors(json.dumps(good).encode()) == []
    assert event_errors(json.dumps({"routing_key": KEY, "event_action": "resolve", "dedup_key": "k"}).encode()) == []
    payload = good["payload"]
    bad: list[dict[str, Any]] = [
        {k: v for k, v in good.items() if k != "routing_key"},
        {**good, "routing_key": KEY[:31]},
        {**good, "event_action": "close"},
        {**good, "dedup_key": "k" * 256},
        {k: v for k, v in good.items() if k != "payload"},
        {**good, "payload": {**payload, "severity": "high"}},  # type: ignore[dict-item]
        {**good, "payload": {**payload, "summary": "s" * 1025}},  # type: ignore[dict-item]
        {**good, "payload": {k: v for k, v in payload.items() if k != "source"}},  # type: ignore[attr-defined]
        {**good, "payload": {**payload, "timestamp": "yesterday"}},  # type: ignore[dict-item]
        {**good, "payload": {**payload, "timestamp": "2026-11-20T09:30:00"}},  # type: ignore[dict-item]
        {**good, "payload": {**payload, "details": {}}},  # type: ignore[dict-item]
        {**good, "images": [{"src": "http://plain.example/p.png"}]},
        {**good, "links": [{"text": "no href"}]},
        {**good, "extra": 1},
        {"routing_key": KEY, "event_action": "acknowledge"},
        {"routing_key": KEY, "event_action": "resolve", "dedup_key": "k", "payload": payload},
    ]
    for event in bad:
        assert event_errors(json.dumps(event).encode()), event
    assert event_errors(b"{not json")
    assert event_errors(json.dumps({**good, "payload": {**payload, "custom_details": {"x": "y" * 600_000}}}).encode())  # type: ignore[dict-item]


# -- the incident's alert ----------------------------------------------------------------------------------


def test_an_incident_is_triggered_acknowledged_resolved_and_triggered_again(
    tmp_path: Path, estate_store: Path, pagerduty: PagerDuty
) -> None:
    config, store, clock = setup(tmp_path, estate_store, pagerduty)
    critical = insert_incident(store, severity="critical", impact=50_000.0)

    first = run_alerts(config, store, clock)

    assert first.failed == 0 and first.sent == len(pagerduty.events) > 1
    assert pagerduty.refused == []
    assert {e["event_action"] for e in pagerduty.events} == {"trigger"}
    open_high = store.query("SELECT id, severity FROM anomalies WHERE status IN ('open', 'ongoing') "
                            "AND severity IN ('high', 'critical') AND kind <> 'drop'")  # fmt: skip
    assert {a.dedup_key for a in pagerduty.alerts.values()} == {f"spendwatch:incident:{i}" for i, _ in open_high}
    mapped = {"critical": "critical", "high": "error"}
    assert all(pagerduty.alerts[f"spendwatch:incident:{i}"].severity == mapped[s] for i, s in open_high)
    event = next(e for e in pagerduty.events if e["dedup_key"] == f"spendwatch:incident:{critical}")
    assert event["payload"]["source"] == "aws/111111111111" and event["payload"]["component"] == "Amazon EC2"
    assert event["payload"]["summary"].startswith("CRITICAL spike: aws / 111111111111 / Amazon EC2 — +$50,000.00 over")
    assert event["payload"]["custom_details"]["acknowledge_command"] == f"spendwatch anomalies ack {critical}"
    assert run_alerts(config, store, clock).sent == 0  # nothing twice

    others = [i for i, _ in open_high if i != critical]
    give_feedback(store, critical, "acknowledged", actor="ana@example.com")
    with store.transaction() as con:  # detection finds another one over
        con.execute("UPDATE anomalies SET status = 'resolved', resolved_at = ? WHERE id = ?", [NOW, others[0]])
    second = run_alerts(config, store, clock)
    assert second.sent == 2 and pagerduty.refused == []
    assert {(e["event_action"], e["dedup_key"]) for e in pagerduty.events[-2:]} == {
        ("acknowledge", f"spendwatch:incident:{critical}"),
        ("resolve", f"spendwatch:incident:{others[0]}"),
    }
    assert pagerduty.alerts[f"spendwatch:incident:{critical}"].status == "acknowledged"
    assert pagerduty.alerts[f"spendwatch:incident:{others[0]}"].status == "resolved"
    assert not any("payload" in e for e in pagerduty.events[-2:])

    with store.transaction() as con:  # the acknowledged spike ends; the resolved one comes back
        con.execute("UPDATE anomalies SET resolved_at = ? WHERE id = ?", [NOW, critical])
        con.execute("UPDATE anomalies SET status = 'ongoing', resolved_at = NULL WHERE id = ?", [others[0]])
    third = run_alerts(config, store, clock)
    assert third.sent == 2 and pagerduty.refused == []
    assert pagerduty.alerts[f"spendwatch:incident:{critical}"].status == "resolved"
    back = pagerduty.alerts[f"spendwatch:incident:{others[0]}"]
    assert back.status == "triggered" and back.summary.startswith("HIGH")
    assert run_alerts(config, store, clock).sent == 0
    keys = {k for (k,) in store.query("SELECT key FROM alerts_sent WHERE channel = 'pager'")}
    assert {f"acknowledge:incident:{critical}:1", f"resolve:incident:{critical}:2"} <= keys
    assert {f"resolve:incident:{others[0]}:1", f"trigger:incident:{others[0]}:2"} <= keys


def test_an_incident_never_paged_is_never_acknowledged(
    tmp_path: Path, estate_store: Path, pagerduty: PagerDuty
) -> None:
    config, store, clock = setup(tmp_path, estate_store, pagerduty)
    quiet = insert_incident(store, severity="medium", impact=300.0)
    run_alerts(config, store, clock)
    before = len(pagerduty.events)
    give_feedback(store, quiet, "acknowledged", actor="ana@example.com")
    assert run_alerts(config, store, clock).sent == 0 and len(pagerduty.events) == before


def test_a_throttled_service_is_retried_with_backoff(tmp_path: Path, estate_store: Path, pagerduty: PagerDuty) -> None:
    config, store, clock = setup(tmp_path, estate_store, pagerduty)
    pagerduty.fail = 429
    failed = run_alerts(config, store, clock)
    assert failed.failed > 0 and failed.sent == 0 and "HTTP 429" in failed.errors[0]
    assert all(KEY not in error for error in failed.errors)
    pagerduty.fail = None
    assert run_alerts(config, store, clock).sent == 0  # waiting for the backoff
    clock.advance(minutes=2)
    assert run_alerts(config, store, clock).sent == failed.failed and pagerduty.refused == []


# -- the event itself ----------------------------------------------------------------------------------------


def test_hostile_data_reaches_pagerduty_as_plain_text(pagerduty: PagerDuty) -> None:
    pager = channel(pagerduty.url)
    for alert in (
        incident_alert(hostile_incident(HOSTILE), NotifyConfig(), ()),
        action_alert(hostile_action(HOSTILE), NotifyConfig(), ()),
    ):
        pager.send_alert(alert)
    assert pagerduty.refused == [] and len(pagerduty.events) == 2
    for event in pagerduty.events:
        sent = {k: v for k, v in event.items() if k != "routing_key"}
        assert chat_injections(sent, "teams") == []
        assert "evil.example" in json.dumps(sent)  # still there, as text


def test_kill_switch_approvals_page_and_resolve_when_settled(pagerduty: PagerDuty) -> None:
    pager = channel(pagerduty.url, dedup_prefix="sw-prod", severities={"high": "critical"})
    waiting = action_alert(hostile_action("llm-finetune", state="awaiting-approval", action_id=4), NotifyConfig(), ())
    pager.send_alert(waiting)
    event = pagerduty.events[-1]
    assert (event["event_action"], event["dedup_key"], event["payload"]["severity"]) == (
        "trigger", "sw-prod:action:4", "critical"
    )  # fmt: skip
    assert event["payload"]["custom_details"]["approve_command"] == "spendwatch actions approve 4"
    pager.send_alert(action_alert(hostile_action("llm-finetune", state="done", action_id=4), NotifyConfig(), ()))
    assert pagerduty.alerts["sw-prod:action:4"].status == "resolved" and pagerduty.refused == []


def test_errors_are_transient_or_not_and_never_show_the_routing_key(pagerduty: PagerDuty) -> None:
    pager = channel(pagerduty.url)
    alert = incident_alert(hostile_incident("ml"), NotifyConfig(), ())
    for status, transient in ((400, False), (403, False), (429, True), (503, True)):
        pagerduty.fail = status
        with pytest.raises(ChannelError) as caught:
            pager.send_alert(alert)
        assert caught.value.transient is transient and f"HTTP {status}" in str(caught.value)
    pagerduty.fail = None
    pagerduty.stop()
    with pytest.raises(ChannelError, match="cannot reach the service") as caught:
        pager.send_alert(alert)
    assert caught.value.transient and KEY not in str(caught.value)


def test_an_answer_echoing_the_routing_key_is_scrubbed() -> None:
    class Echo:
        status = 202

        def __init__(self, request: Any, timeout: float) -> None:
            self.body = request.data

        def __enter__(self) -> Echo:
            return self

        def __exit__(self, *args: Any) -> None:
            return None

        def read(self, size: int) -> bytes:
            return json.dumps({"status": "success", "message": f"got {json.loads(self.body)['routing_key']}"}).encode()

    config = PagerDutyChannelConfig.model_validate({"name": "pager", "type": "pagerduty", "routing_key": KEY})
    delivery = PagerDutyChannel(config, clients={"url_opener": Echo}).send_alert(
        incident_alert(hostile_incident("ml"), NotifyConfig(), ())
    )
    assert KEY not in delivery.detail and "[redacted]" in delivery.detail


# -- config ------------------------------------------------------------------------------------------------


def test_the_routing_key_is_a_secret_checked_without_being_shown(tmp_path: Path) -> None:
    notify = {"channels": [{"name": "pager", "type": "pagerduty", "routing_key": "${PD_ROUTING_KEY}"}]}
    path = write_config(tmp_path, notify=notify)
    config = load(path, environ={"PD_ROUTING_KEY": KEY})
    pager = config.notify.channels[0]
    assert KEY not in repr(pager) and KEY not in pager.model_dump_json()
    assert pager.severities == {"low": "info", "medium": "warning", "high": "error", "critical": "critical"}  # type: ignore[attr-defined]
    wrong = "https://events.pagerduty.com/integration/abc/enqueue"  # the URL pasted instead of the key
    with pytest.raises(ConfigError) as caught:
        load(path, environ={"PD_ROUTING_KEY": wrong})
    assert "32-character integration key" in str(caught.value) and wrong not in str(caught.value)


def test_severities_can_be_remapped_in_part() -> None:
    pager = channel("https://events.eu.pagerduty.com/v2/enqueue", severities={"medium": "info"})
    assert pager.config.severities["medium"] == "info" and pager.config.severities["critical"] == "critical"
    with pytest.raises(ValueError, match="severities"):
        channel("https://events.pagerduty.com/v2/enqueue", severities={"high": "sev1"})
    with pytest.raises(ValueError, match="url"):
        channel("ftp://events.pagerduty.com")


def test_the_timestamp_and_window_are_utc(pagerduty: PagerDuty) -> None:
    pager = channel(pagerduty.url)
    incident = hostile_incident("ml")
    body = pager.event_body(incident_alert(incident, NotifyConfig(), ()))
    assert body["payload"]["timestamp"] == (NOW - timedelta(days=1)).isoformat()
    assert body["payload"]["custom_details"]["window"].endswith("UTC")
