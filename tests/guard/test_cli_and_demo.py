"""``spendwatch guard run-once`` / ``status`` against the fake Google server, and the demo's runaway replay."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner

from spendwatch.cli import main
from spendwatch.demo import demo_config
from spendwatch.guard.demo import RUNAWAY_JOB, replay_runaway
from spendwatch.killswitch.journal import list_actions
from spendwatch.store import Store
from tests.doubles.clock import FixedClock
from tests.doubles.google import GoogleApiServer
from tests.doubles.google_guard import FakeRunningBigQuery, RunningQuery
from tests.guard.conftest import NOW, PROJECT

TIB = 1 << 40


def _config_file(tmp_path: Path, endpoint: str) -> Path:
    path = tmp_path / "spendwatch.yaml"
    path.write_text(
        "store: {path: store.duckdb}\n"
        "sources:\n"
        f"  - name: gcp-jobs\n    type: gcp-jobs\n    projects: [{PROJECT}]\n"
        "    vertex: {enabled: false}\n    dataproc: {enabled: false}\n"
        f"    gcp: {{project: {PROJECT}, anonymous: true, endpoints: {{bigquery: '{endpoint}'}}}}\n"
        "guard:\n  defaults: {job_cost: 500, job_projected_cost: null, user_daily_cost: 800, project_burn_rate: null}\n"
    )
    return path


def test_run_once_then_status_show_the_runaway_and_its_user(google_api: GoogleApiServer, tmp_path: Path) -> None:
    fake = FakeRunningBigQuery(google_api, now=lambda: datetime.now(UTC))
    started = datetime.now(UTC) - timedelta(hours=1)
    fake.add(RunningQuery(PROJECT, "bquxjob_big", start=started, bytes_per_second=TIB / 30))  # ~$750
    fake.add(
        RunningQuery(
            PROJECT, "bquxjob_small", start=started, bytes_per_second=TIB / 3600, user_email="erin@example.com"
        )
    )
    path = _config_file(tmp_path, google_api.endpoint)
    runner = CliRunner()

    ran = runner.invoke(main, ["-c", str(path), "guard", "run-once"])

    assert ran.exit_code == 0, ran.output
    assert ran.output.startswith("guard: 2 running job(s) on 1 source(s), 1 breach(es); incidents 1 opened")
    assert "high     guard:default job-cost: bigquery job bquxjob_big of dana.kim@example.com has cost 75" in ran.output

    shown = runner.invoke(main, ["-c", str(path), "guard", "status"])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert "2 running job(s)" in lines[0] and "the guard's last poll" in lines[0]
    assert "bigquery analytics-warehouse:US.bquxjob_big (dana.kim@example.com, analytics-warehouse)" in lines[2]
    assert any(line.startswith("  dana.kim@example.com: 75") and "(cap 800.00; 1 job(s))" in line for line in lines)
    assert any("#1 high guard:default: dana.kim@example.com's query bquxjob_big" in line for line in lines)

    data = json.loads(runner.invoke(main, ["-c", str(path), "guard", "status", "--live", "--json"]).output)
    assert data["origin"] == "polled now" and [j["job_id"].rpartition(".")[2] for j in data["jobs"]] == [
        "bquxjob_big",
        "bquxjob_small",
    ]
    assert data["jobs"][0]["cap"] == 500 and data["jobs"][0]["burn_rate_per_hour"] > 700


def test_run_once_reports_a_failed_listing_and_exits_1(google_api: GoogleApiServer, tmp_path: Path) -> None:
    google_api.fail("GET", "/bigquery/v2/projects/{p}/jobs", 403, times=5, message="Access Denied")
    result = CliRunner().invoke(main, ["-c", str(_config_file(tmp_path, google_api.endpoint)), "guard", "run-once"])
    assert result.exit_code == 1
    assert "spendwatch: problem: gcp-jobs bigquery:" in result.output and "bigquery.jobs.listAll" in result.output


def test_the_demo_replay_catches_the_runaway_within_a_minute_and_names_its_user(tmp_path: Path) -> None:
    clock = FixedClock(NOW)
    config = demo_config(tmp_path)
    store = Store(tmp_path / "demo.duckdb", clock=clock)
    scratch = Store(tmp_path / "enforce.duckdb", clock=clock)

    result = replay_runaway(store, clock, config, enforce_store=scratch)

    assert result.job_id == RUNAWAY_JOB and result.user == "dana.kim@example.com"
    assert result.caught_within_a_minute
    dry, enforce = result.dry_run, result.enforce
    assert dry.crossed_at == datetime(2026, 11, 19, 14, 10, 39, 285714, tzinfo=UTC)  # $500 of 1,344 TiB over 2h59
    assert dry.caught_at == enforce.caught_at == datetime(2026, 11, 19, 14, 11, tzinfo=UTC)
    assert dry.cancelled_at is None and dry.final_cost == 8400.0
    assert enforce.cancelled_at == enforce.caught_at and 500 < enforce.final_cost < 520
    [planned] = list_actions(store)
    assert planned.mode == "dry-run" and planned.target.resource_id == RUNAWAY_JOB
    [cancelled] = list_actions(scratch)
    assert (cancelled.mode, cancelled.state) == ("enforce", "done")
    lines = result.lines()
    assert "dana.kim@example.com's BigQuery query bquxjob_7f3a2c91_runaway (analytics-warehouse) crossed" in lines[0]
    assert "caught at 14:11:00 UTC by the next 60 s poll (20 s after crossing)" in lines[1]
    assert "journaled as dry-run" in lines[2] and "billed $8,400.00" in lines[2]
    assert "cancelled at 14:11:00 UTC" in lines[3]
    states = store.query("SELECT status, severity FROM anomalies WHERE kind = 'guard'")
    assert states == [("resolved", "critical")]  # it ran on to its end in dry-run
