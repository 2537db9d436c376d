"""The guard's place in the daemon: its own job on guard.every, recorded in runs, nudging the alerts."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from spendwatch.config import Config
from spendwatch.daemon import DaemonContext, build_scheduler, guard_job
from spendwatch.guard.engine import guard_interval
from spendwatch.store import Store
from tests.doubles.clock import FixedClock
from tests.doubles.google import GoogleApiServer
from tests.doubles.google_guard import FakeRunningBigQuery, RunningQuery
from tests.guard.conftest import NOW, PROJECT, gcp_config

TIB = 1 << 40


def test_the_daemon_schedules_the_guard_on_its_own_interval(google_api: GoogleApiServer, tmp_path: Path) -> None:
    config = gcp_config(tmp_path, google_api.endpoint, guard={"every": "15s"})
    ctx = DaemonContext(config, Store(tmp_path / "s.duckdb"), FixedClock(NOW))
    job = build_scheduler(ctx).get_job("guard")
    assert job is not None and job.trigger.interval == timedelta(seconds=15)
    assert job.func is guard_job


def test_no_guard_job_without_job_sources_or_when_disabled(google_api: GoogleApiServer, tmp_path: Path) -> None:
    simulated = Config.model_validate({"sources": [{"name": "demo", "type": "simulated"}]})
    disabled = gcp_config(tmp_path, google_api.endpoint, guard={"enabled": False})
    for config in (simulated, disabled):
        assert guard_interval(config) is None
        ctx = DaemonContext(config, Store(tmp_path / "s.duckdb"), FixedClock(NOW))
        assert build_scheduler(ctx).get_job("guard") is None


def test_the_guard_job_runs_a_pass_and_records_it(
    google_api: GoogleApiServer, tmp_path: Path, clock: FixedClock, store: Store
) -> None:
    fake = FakeRunningBigQuery(google_api, now=clock.now)
    fake.add(
        RunningQuery(PROJECT, "bquxjob_big", start=NOW - timedelta(hours=1), bytes_per_second=TIB / 30)
    )  # $750 by NOW
    config = gcp_config(tmp_path, google_api.endpoint)
    ctx = DaemonContext(config, store, clock)

    guard_job(ctx)

    [(job, status, detail)] = store.query("SELECT job, status, detail FROM runs")
    assert (job, status) == ("guard", "ok") and '"breaches": 2' in detail
    # The default caps: $750 so far is over the $500 per-job cap, and $750/h over the $500/h project burn rate.
    limits = store.query("SELECT series_key FROM anomalies WHERE kind = 'guard' ORDER BY series_key")
    assert [k.split("|")[0] for (k,) in limits] == ["job-cost", "project-burn-rate"]
