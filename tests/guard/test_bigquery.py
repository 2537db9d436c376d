"""The guard on BigQuery, end to end: the real bigquery client lists growing jobs on the fake Google
server, the guard opens one incident per breach, and the kill switch cancels (or not) through its journal."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from spendwatch.config import Config
from spendwatch.detect.incidents import get_incident, give_feedback, load_incidents
from spendwatch.guard import GuardRun, run_guard
from spendwatch.guard.state import WatchState
from spendwatch.killswitch.engine import KillSwitch
from spendwatch.killswitch.journal import list_actions
from spendwatch.store import Store
from tests.doubles.clock import FixedClock
from tests.doubles.google import GoogleApiServer
from tests.doubles.google_guard import FakeRunningBigQuery, RunningQuery
from tests.guard.conftest import NOW, PROJECT, cancel_rule, gcp_config

pytestmark = pytest.mark.slow  # runs first (tests/conftest.py): it is among the suite's longest files

TIB = 1 << 40
PER_MINUTE = TIB * 5  # $31.25 of on-demand bytes a minute
CAP = {"defaults": {"job_cost": 500, "job_projected_cost": None, "user_daily_cost": None, "project_burn_rate": None}}


def runaway(**extra: Any) -> RunningQuery:
    """Started 10 minutes before NOW at $31.25/min: $312.50 at NOW, over $500 from NOW + 7 min."""
    values: dict[str, Any] = {
        "project": PROJECT,
        "job_id": "bquxjob_runaway",
        "start": NOW - timedelta(minutes=10),
        "bytes_per_second": PER_MINUTE / 60,
        "estimated_bytes": 1344 * TIB,
    }
    values.update(extra)
    return RunningQuery(**values)


def steady(**extra: Any) -> RunningQuery:
    """Another user's query at $1/min: it never reaches the cap in these tests."""
    values: dict[str, Any] = {
        "project": PROJECT,
        "job_id": "bquxjob_steady",
        "start": NOW - timedelta(minutes=10),
        "bytes_per_second": TIB * 0.16 / 60,
        "user_email": "erin.lee@example.com",
    }
    values.update(extra)
    return RunningQuery(**values)


def polls(config: Config, store: Store, clock: FixedClock, count: int, state: WatchState) -> list[GuardRun]:
    runs = []
    for _ in range(count):
        runs.append(run_guard(config, store, clock, state=state))
        clock.advance(minutes=1)
    return runs


def test_a_breach_opens_one_incident_and_one_cancel_in_enforce_mode(
    google_api: GoogleApiServer, store: Store, clock: FixedClock, tmp_path: Path
) -> None:
    fake = FakeRunningBigQuery(google_api, now=clock.now)
    fake.add(runaway())
    fake.add(steady())
    config = gcp_config(tmp_path, google_api.endpoint, guard=CAP, rules=[cancel_rule("enforce")])
    state = WatchState.new(config.guard)

    runs = polls(config, store, clock, 12, state)

    first = next(i for i, r in enumerate(runs) if r.breaches)
    assert first == 7  # NOW + 7 min: $531.25 > $500 (at +6 it is exactly $500: not over)
    assert all(not r.incidents.opened for i, r in enumerate(runs) if i != first)
    [cancel] = fake.cancels
    assert (cancel.job_id, cancel.at) == ("bquxjob_runaway", NOW + timedelta(minutes=7))  # in the breaching poll
    [action] = list_actions(store)
    assert (action.state, action.mode, action.verb, action.rule) == (
        "done",
        "enforce",
        "cancel",
        "cancel-runaway-queries",
    )
    assert action.target.resource_id == "bquxjob_runaway" and action.target.owner == "dana.kim@example.com"
    [incident] = load_incidents(store, kinds=["guard"])
    assert incident.monitor == "guard:default" and incident.status == "resolved"  # the job ended after the cancel
    assert incident.dimensions["owner"] == "dana.kim@example.com" and incident.dimensions["limit"] == "job-cost"
    assert incident.actual_total == pytest.approx(531.25) and incident.expected_total == 500
    assert "dana.kim@example.com's query bquxjob_runaway in analytics-warehouse cost $531.25" in (
        incident.culprit_sentence()
    )
    assert incident.jobs[0].state == "ENDED" and "bytes processed so far" in (incident.jobs[0].cost_method or "")
    assert action.anomaly_id == incident.id


def test_an_ongoing_breach_updates_the_same_incident_and_escalates(
    google_api: GoogleApiServer, store: Store, clock: FixedClock, tmp_path: Path
) -> None:
    fake = FakeRunningBigQuery(google_api, now=clock.now)
    fake.add(runaway(start=NOW - timedelta(minutes=3), bytes_per_second=PER_MINUTE * 4 / 60))  # $125/min
    config = gcp_config(tmp_path, google_api.endpoint, guard=CAP, rules=[cancel_rule("dry-run")])
    state = WatchState.new(config.guard)

    runs = polls(config, store, clock, 16, state)

    assert sum(len(r.incidents.opened) for r in runs) == 1
    [incident] = load_incidents(store, kinds=["guard"])
    severities = [max((b.severity for b in r.breaches), default=None) for r in runs]
    assert severities[:3] == [None, None, "high"] and severities[13:] == ["critical"] * 3  # 4x its cap from +13
    assert incident.status == "ongoing" and incident.severity == "critical"
    assert incident.actual_total == pytest.approx(375 + 15 * 125)
    assert len(incident.points) == 14 and incident.points[-1].expected == 500
    assert len(list_actions(store)) == 1  # one journaled (dry-run) action however many polls see it
    assert fake.cancels == []


def test_dry_run_journals_the_cancel_and_changes_nothing(
    google_api: GoogleApiServer, store: Store, clock: FixedClock, tmp_path: Path
) -> None:
    fake = FakeRunningBigQuery(google_api, now=clock.now)
    job = fake.add(runaway())
    config = gcp_config(tmp_path, google_api.endpoint, guard=CAP, rules=[cancel_rule("dry-run")])

    runs = polls(config, store, clock, 10, WatchState.new(config.guard))

    assert fake.cancels == [] and job.cancelled_at is None and job.state(clock.now()) == "RUNNING"
    [action] = list_actions(store)
    assert action.mode == "dry-run" and action.state == "skipped" and action.result is not None
    assert action.result["dry_run"] is True and "would cancel" in action.result["summary"]
    # The kill switch looks again only when something a rule could match on changed (open → ongoing).
    assert [None if r.killswitch is None else len(r.killswitch.dry_run) for r in runs if r.breaches] == [1, 0, None]


def test_a_job_under_its_cap_is_never_cancelled(
    google_api: GoogleApiServer, store: Store, clock: FixedClock, tmp_path: Path
) -> None:
    fake = FakeRunningBigQuery(google_api, now=clock.now)
    fake.add(steady(estimated_bytes=10 * TIB))  # projected $62.50, well under every cap
    config = gcp_config(tmp_path, google_api.endpoint, rules=[cancel_rule("enforce")])

    runs = polls(config, store, clock, 15, WatchState.new(config.guard))

    assert fake.cancels == [] and list_actions(store) == []
    assert load_incidents(store, kinds=["guard"]) == []
    assert all(r.killswitch is None for r in runs)  # no breach: the kill switch was not even consulted
    assert [len(r.estimates) for r in runs] == [1] * 15


@pytest.mark.parametrize(
    ("protection", "labels", "reason"),
    [
        (None, {"spendwatch-protect": "true"}, "protected by tag spendwatch-protect=true"),
        ({"projects": ["analytics-*"]}, {}, "protected project analytics-warehouse"),
        ({"owners": ["dana.*"]}, {}, "protected owner dana.kim@example.com"),
    ],
)
def test_a_protected_job_is_never_cancelled(
    google_api: GoogleApiServer,
    store: Store,
    clock: FixedClock,
    tmp_path: Path,
    protection: dict[str, Any] | None,
    labels: dict[str, str],
    reason: str,
) -> None:
    fake = FakeRunningBigQuery(google_api, now=clock.now)
    fake.add(runaway(labels=labels))
    config = gcp_config(tmp_path, google_api.endpoint, guard=CAP, rules=[cancel_rule("enforce")], protection=protection)

    polls(config, store, clock, 12, WatchState.new(config.guard))

    assert fake.cancels == []
    [action] = list_actions(store)
    assert action.state == "skipped" and reason in (action.result or {}).get("summary", "")
    [incident] = load_incidents(store, kinds=["guard"])
    assert incident.status == "ongoing"  # still breached and still alerting: only the action is refused


def test_approve_mode_waits_for_a_person_then_cancels(
    google_api: GoogleApiServer, store: Store, clock: FixedClock, tmp_path: Path
) -> None:
    fake = FakeRunningBigQuery(google_api, now=clock.now)
    fake.add(runaway())
    config = gcp_config(tmp_path, google_api.endpoint, guard=CAP, rules=[cancel_rule("approve")])
    polls(config, store, clock, 9, WatchState.new(config.guard))

    [action] = list_actions(store)
    assert action.state == "awaiting-approval" and fake.cancels == []
    approved = KillSwitch(config.killswitch, store, clock).approve(action.id, "oncall@example.com")
    assert approved.state == "done" and [c.job_id for c in fake.cancels] == ["bquxjob_runaway"]


def test_an_acknowledged_incident_is_not_acted_on(
    google_api: GoogleApiServer, store: Store, clock: FixedClock, tmp_path: Path
) -> None:
    fake = FakeRunningBigQuery(google_api, now=clock.now)
    fake.add(runaway())
    config = gcp_config(tmp_path, google_api.endpoint, guard=CAP, rules=[cancel_rule("approve")])
    state = WatchState.new(config.guard)
    polls(config, store, clock, 8, state)
    [incident] = load_incidents(store, kinds=["guard"])
    give_feedback(store, incident.id, "acknowledged", actor="dana.kim@example.com", note="a planned backfill")
    polls(config, store, clock, 3, state)
    assert get_incident(store, incident.id).status == "acknowledged"  # people's decisions win
    assert len(list_actions(store)) == 1 and fake.cancels == []


def test_projected_cost_cap_catches_it_on_the_first_poll_and_bytes_billed_caps_the_projection(
    google_api: GoogleApiServer, store: Store, clock: FixedClock, tmp_path: Path
) -> None:
    fake = FakeRunningBigQuery(google_api, now=clock.now)
    fake.add(runaway())  # estimate 1,344 TiB = $8,400
    fake.add(steady(job_id="bquxjob_capped", estimated_bytes=1000 * TIB, maximum_bytes_billed=100 * TIB))
    guard = {
        "defaults": {"job_cost": None, "job_projected_cost": 2000, "user_daily_cost": None, "project_burn_rate": None}
    }
    config = gcp_config(tmp_path, google_api.endpoint, guard=guard)

    run = run_guard(config, store, clock, state=WatchState.new(config.guard))

    [breach] = run.breaches
    assert breach.limit == "job-projected-cost" and breach.actual == pytest.approx(8400.0)
    assert "is projected to cost 8,400.00 USD" in breach.summary
    capped = next(e for e in run.estimates if e.key.endswith("bquxjob_capped"))
    assert capped.projected == pytest.approx(625.0) and "capped at maximumBytesBilled" in capped.method


def test_progress_comes_from_the_timeline_when_bytes_so_far_are_not_reported(
    google_api: GoogleApiServer, store: Store, clock: FixedClock, tmp_path: Path
) -> None:
    fake = FakeRunningBigQuery(google_api, now=clock.now)
    fake.add(runaway(report_processed=False, estimated_bytes=200 * TIB))
    config = gcp_config(tmp_path, google_api.endpoint, guard=CAP)

    [item] = run_guard(config, store, clock, state=WatchState.new(config.guard)).estimates

    assert item.cost == pytest.approx(312.5, rel=0.01)  # 50 of 200 TiB done: 25% of the $1,250 estimate
    assert item.projected == pytest.approx(1250.0)
    assert "25% of work units done (query timeline)" in item.method


def test_only_jobs_near_a_cap_are_described(
    google_api: GoogleApiServer, store: Store, clock: FixedClock, tmp_path: Path
) -> None:
    fake = FakeRunningBigQuery(google_api, now=clock.now)
    fake.add(runaway(list_progress=False))  # projected $8,400: worth a jobs.get
    fake.add(steady(list_progress=False, estimated_bytes=2 * TIB))  # projected $12.50: not worth one
    config = gcp_config(tmp_path, google_api.endpoint, guard=CAP)

    run = run_guard(config, store, clock, state=WatchState.new(config.guard))

    assert fake.gets == 1 and run.poll is not None and run.poll.describes == 1
    assert run.poll.api_calls == {"bigquery:jobs.list": 2, "bigquery:jobs.get": 1}  # running + pending, one get
    by_id = {e.key.rpartition(".")[2]: e for e in run.estimates}
    assert by_id["bquxjob_runaway"].cost == pytest.approx(312.5)  # from jobs.get
    assert by_id["bquxjob_steady"].cost is None and by_id["bquxjob_steady"].projected == pytest.approx(12.5)


def test_editions_jobs_are_priced_by_slot_ms_and_projected_to_the_query_limit(
    google_api: GoogleApiServer, store: Store, clock: FixedClock, tmp_path: Path
) -> None:
    fake = FakeRunningBigQuery(google_api, now=clock.now)
    fake.add(steady(reservation="analytics-warehouse:US.prod", slot_ms_per_second=2_000_000.0))
    config = gcp_config(tmp_path, google_api.endpoint, guard=CAP)

    [item] = run_guard(config, store, clock, state=WatchState.new(config.guard)).estimates

    slot_hours = 600 * 2_000_000 / 3_600_000
    assert item.cost == pytest.approx(slot_hours * 0.06)
    assert item.projected == pytest.approx(item.cost * 36)  # 10 min so far, 6 h limit
    assert "slot-ms so far × enterprise" in item.method


def test_a_failed_listing_keeps_the_incident_open_and_says_why(
    google_api: GoogleApiServer, store: Store, clock: FixedClock, tmp_path: Path
) -> None:
    fake = FakeRunningBigQuery(google_api, now=clock.now)
    fake.add(runaway(start=NOW - timedelta(minutes=20)))
    config = gcp_config(tmp_path, google_api.endpoint, guard=CAP)
    state = WatchState.new(config.guard)
    polls(config, store, clock, 1, state)
    google_api.fail("GET", "/bigquery/v2/projects/{p}/jobs", 403, times=10, message="Access Denied")

    [run] = polls(config, store, clock, 1, state)

    assert any("bigquery.jobs.listAll" in p for p in run.problems)
    [incident] = load_incidents(store, kinds=["guard"])
    assert incident.status == "ongoing"  # the last sighting stands in; nothing is resolved on a failed listing


def test_a_guard_incident_reaches_the_immediate_alerts(
    google_api: GoogleApiServer, store: Store, clock: FixedClock, tmp_path: Path
) -> None:
    from spendwatch.notify.alerts import run_alerts

    fake = FakeRunningBigQuery(google_api, now=clock.now)
    fake.add(runaway(start=NOW - timedelta(minutes=20)))
    notify = {
        "channels": [{"name": "outbox", "type": "folder", "path": str(tmp_path / "outbox")}],
        "alerts": {"channels": ["outbox"], "min_severity": "high"},
    }
    config = gcp_config(tmp_path, google_api.endpoint, guard=CAP, notify=notify)
    run_guard(config, store, clock, state=WatchState.new(config.guard))

    sent = run_alerts(config, store, clock)

    assert sent.sent == 1 and sent.failed == 0
    [alert] = [json.loads(p.read_text()) for p in (tmp_path / "outbox").glob("*.json")]
    text = json.dumps(alert)
    assert "dana.kim@example.com's query bquxjob_runaway in analytics-warehouse cost $625.00" in text
    assert "HIGH guard" in text


def test_running_jobs_are_recorded_and_marked_ended_when_they_finish(
    google_api: GoogleApiServer, store: Store, clock: FixedClock, tmp_path: Path
) -> None:
    fake = FakeRunningBigQuery(google_api, now=clock.now)
    fake.add(steady(total_bytes=int(TIB * 0.16 * 12)))  # finishes by itself at NOW + 2 min
    config = gcp_config(tmp_path, google_api.endpoint, guard=CAP)
    state = WatchState.new(config.guard)
    polls(config, store, clock, 1, state)
    rows = store.query("SELECT source, state, estimated_cost FROM jobs")
    assert rows == [("guard:gcp-jobs", "RUNNING", pytest.approx(10.0))]

    runs = polls(config, store, clock, 3, state)

    assert [r.ended for r in runs] == [0, 1, 0]
    assert store.query("SELECT state, end_time IS NOT NULL FROM jobs") == [("ENDED", True)]


def test_a_rule_with_a_higher_threshold_acts_once_the_breach_grows_past_it(
    google_api: GoogleApiServer, store: Store, clock: FixedClock, tmp_path: Path
) -> None:
    fake = FakeRunningBigQuery(google_api, now=clock.now)
    fake.add(runaway(start=NOW - timedelta(minutes=3), bytes_per_second=PER_MINUTE * 4 / 60))  # $125/min
    config = gcp_config(tmp_path, google_api.endpoint, guard=CAP, rules=[cancel_rule("enforce", min_impact=300)])

    runs = polls(config, store, clock, 8, WatchState.new(config.guard))

    # Over the cap from +2 ($625, impact 125); over the rule's $300 impact from +4 ($875): cancelled then.
    assert [c.at for c in fake.cancels] == [NOW + timedelta(minutes=4)]
    assert [len(r.killswitch.executed) if r.killswitch else None for r in runs[:5]] == [None, None, 0, 0, 1]
