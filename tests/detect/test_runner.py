"""Detection over the store: incidents, their lifecycle, attribution, feedback and the traps of real bills."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from spendwatch.cli import main
from spendwatch.config import parse_config
from spendwatch.demo import match_injected
from spendwatch.detect.incidents import give_feedback, load_incidents
from spendwatch.detect.runner import run_detection
from spendwatch.errors import NotFoundError
from spendwatch.store import Store
from tests.conftest import DEMO_DAY
from tests.doubles.clock import FixedClock
from tests.doubles.lines import cost_lines

START = datetime(2026, 8, 1, tzinfo=UTC)
DAYS = 100
NOW = START + timedelta(days=DAYS, hours=3)  # the last full day is START + DAYS - 1


def config(tmp_path: Path, extra: str = ""):  # type: ignore[no-untyped-def]
    text = (
        "store: {path: s.duckdb}\n"
        "sources:\n  - {name: bills, type: focus, path: unused, settle_lag: 2h}\n"
        "monitors:\n  - {name: svc, dimensions: [provider, sub_account_id, service_name], granularity: [daily]}\n"
        + extra
    )
    return parse_config(text, tmp_path / "sw.yaml", environ={})


def series(seed: int = 1, base: float = 500.0, spike_at: int | None = None, spike: float = 0.0) -> list[float]:
    rng = np.random.default_rng(seed)
    weekly = np.array([1.0, 1.02, 1.05, 1.03, 0.98, 0.6, 0.55])
    days = [START + timedelta(days=i) for i in range(DAYS)]
    costs = [base * weekly[d.weekday()] * float(np.exp(rng.normal(0, 0.04))) for d in days]
    if spike_at is not None:
        costs[spike_at] += spike
    return costs


def load(store: Store, costs: list[float], source: str = "bills", **fields: object) -> None:
    rows = [{"start": START + timedelta(days=i), "cost": c, **fields} for i, c in enumerate(costs)]
    store.replace_cost_lines(source, START, START + timedelta(days=DAYS), cost_lines(rows))


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


def test_a_spike_is_one_incident_updated_not_duplicated_across_runs(tmp_path: Path, clock: FixedClock) -> None:
    cfg = config(tmp_path)
    store = Store(cfg.store.path, clock=clock)
    load(store, series(spike_at=DAYS - 1, spike=4000.0))
    run_detection(cfg, store, clock)
    found = load_incidents(store)
    assert len(found) == 1
    incident = found[0]
    assert incident.status == "open" and incident.kind in ("spike", "shift")
    assert incident.first_seen == START + timedelta(days=DAYS - 1)
    assert incident.impact == pytest.approx(4000.0, rel=0.1)
    assert incident.severity == "high"
    assert incident.points and incident.points[-1].is_anomaly
    clock.advance(hours=1)
    run_detection(cfg, store, clock)
    again = load_incidents(store)
    assert [i.id for i in again] == [incident.id]
    assert again[0].status == "open", "a re-run over the same data must leave what the first run left"


def test_a_quiet_series_raises_nothing(tmp_path: Path, clock: FixedClock) -> None:
    cfg = config(tmp_path)
    store = Store(cfg.store.path, clock=clock)
    load(store, series(seed=5))
    run_detection(cfg, store, clock)
    assert [i for i in load_incidents(store, statuses=None) if i.kind != "drop"] == []


def test_a_restatement_that_removes_the_spike_withdraws_the_incident(tmp_path: Path, clock: FixedClock) -> None:
    cfg = config(tmp_path)
    store = Store(cfg.store.path, clock=clock)
    load(store, series(spike_at=DAYS - 3, spike=3000.0))
    run_detection(cfg, store, clock)
    (incident,) = load_incidents(store, statuses=["open", "resolved", "ongoing"])
    load(store, series())  # the provider restated the bill: the spike was a metering error
    run_detection(cfg, store, clock)
    after = load_incidents(store, statuses=None)
    assert [(i.id, i.status) for i in after] == [(incident.id, "withdrawn")]


def test_a_restated_incident_growing_back_onto_a_withdrawn_start_revives_it(tmp_path: Path, clock: FixedClock) -> None:
    """Found in a 30-day soak: an incident whose start moved back onto the start of a withdrawn one broke
    the (series, first_seen) key and failed the detect job. The withdrawn incident is that incident."""
    cfg = config(tmp_path)
    store = Store(cfg.store.path, clock=clock)

    def spikes(*days: int) -> list[float]:
        costs = series()
        for day in days:
            costs[day] += 3000.0
        return costs

    load(store, spikes(DAYS - 3))
    run_detection(cfg, store, clock)
    (first,) = load_incidents(store, statuses=["open", "resolved", "ongoing"])
    load(store, spikes())  # restated away: withdrawn
    run_detection(cfg, store, clock)
    load(store, spikes(DAYS - 2))  # a later one
    run_detection(cfg, store, clock)
    (second,) = load_incidents(store, statuses=["open", "resolved", "ongoing"])
    assert second.id != first.id and second.first_seen > first.first_seen

    load(store, spikes(DAYS - 3, DAYS - 2))  # both days: one incident from the first day on
    run_detection(cfg, store, clock)

    live = load_incidents(store, statuses=["open", "resolved", "ongoing"])
    assert [(i.id, i.first_seen) for i in live] == [(first.id, START + timedelta(days=DAYS - 3))]
    assert live[0].last_seen >= START + timedelta(days=DAYS - 2)
    statuses = {i.id: i.status for i in load_incidents(store, statuses=None)}
    assert statuses[second.id] == "withdrawn"


def test_unsettled_steps_are_not_scored(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    last_day_end = START + timedelta(days=DAYS)
    early = FixedClock(last_day_end + timedelta(minutes=30))  # inside the 2h settle lag
    store = Store(cfg.store.path, clock=early)
    load(store, series(spike_at=DAYS - 1, spike=4000.0))
    run_detection(cfg, store, early)
    assert load_incidents(store, statuses=None) == []
    early.advance(hours=2)
    run_detection(cfg, store, early)
    assert len(load_incidents(store)) == 1


def test_fees_credits_and_taxes_are_reported_not_scored(tmp_path: Path, clock: FixedClock) -> None:
    cfg = config(tmp_path)
    store = Store(cfg.store.path, clock=clock)
    load(store, series())
    fee_day = START + timedelta(days=DAYS - 2)
    fee = cost_lines([{"start": fee_day, "cost": 25_000.0, "charge_category": "Purchase", "hours": 1}])
    store.replace_cost_lines("fees", START, START + timedelta(days=DAYS), fee)
    run_detection(cfg, store, clock)
    assert [i for i in load_incidents(store) if i.kind != "drop"] == []
    seen = store.query("SELECT day, charge_category, amount FROM charges_seen")
    assert seen == [(fee_day.date(), "Purchase", 25_000.0)]


def test_currencies_are_separate_series_never_added(tmp_path: Path, clock: FixedClock) -> None:
    cfg = config(tmp_path)
    store = Store(cfg.store.path, clock=clock)
    usd = series(seed=1)
    eur = series(seed=2, spike_at=DAYS - 1, spike=5000.0)
    rows = [{"start": START + timedelta(days=i), "cost": c} for i, c in enumerate(usd)]
    rows += [{"start": START + timedelta(days=i), "cost": c, "billing_currency": "EUR"} for i, c in enumerate(eur)]
    store.replace_cost_lines("bills", START, START + timedelta(days=DAYS), cost_lines(rows))
    run = run_detection(cfg, store, clock)
    assert run.series_scored == 2
    (incident,) = load_incidents(store)
    assert incident.billing_currency == "EUR"
    assert incident.actual_total < 6000  # the USD series' cost was not added in


def test_ack_stops_alerting_and_survives_the_next_run(tmp_path: Path, clock: FixedClock) -> None:
    cfg = config(tmp_path)
    store = Store(cfg.store.path, clock=clock)
    load(store, series(spike_at=DAYS - 1, spike=4000.0))
    run_detection(cfg, store, clock)
    (incident,) = load_incidents(store)
    acked = give_feedback(store, incident.id, "acknowledged", actor="ana", note="load test")
    assert acked.status == "acknowledged" and not acked.is_alerting and acked.feedback_by == "ana"
    run_detection(cfg, store, clock)
    assert load_incidents(store, statuses=["acknowledged"])[0].id == incident.id
    assert load_incidents(store, statuses=["open", "ongoing"]) == []


def test_expected_rebaselines_a_level_change(tmp_path: Path, clock: FixedClock) -> None:
    cfg = config(tmp_path)
    store = Store(cfg.store.path, clock=clock)
    costs = series()
    shift_at = DAYS - 4
    costs[shift_at:] = [c + 1500.0 for c in costs[shift_at:]]  # a new, permanent workload
    load(store, costs)
    run_detection(cfg, store, clock)
    first = [i for i in load_incidents(store, statuses=None) if i.kind != "drop"]
    assert first and first[-1].first_seen == START + timedelta(days=shift_at)
    give_feedback(store, first[-1].id, "expected", actor="ana")
    rebase = store.query("SELECT series_key, rebase_at FROM baselines")
    assert rebase == [(first[-1].series_key, START + timedelta(days=shift_at))]
    run_detection(cfg, store, clock)
    assert load_incidents(store, statuses=["expected"])[0].id == first[-1].id


def test_feedback_on_an_unknown_id_is_a_user_error(tmp_path: Path, clock: FixedClock) -> None:
    store = Store(tmp_path / "s.duckdb", clock=clock)
    with pytest.raises(NotFoundError, match="no anomaly with id 42"):
        give_feedback(store, 42, "acknowledged", actor="x")


def test_the_demo_estate_finds_each_injected_incident_with_its_culprit(pinned_demo: Any) -> None:
    clock = FixedClock(DEMO_DAY)
    result = pinned_demo
    findings = result.findings
    by_key = {f.injected.key: f for f in findings}
    runaway = by_key["runaway-query"]
    assert runaway.correct and runaway.named == "dana.kim@example.com"
    assert runaway.incident is not None and runaway.incident.jobs[0].job_id == "bquxjob_7f3a2c91_runaway"
    assert by_key["forgotten-training"].named == "ben.okafor@example.com"
    assert by_key["storage-leak"].correct
    assert by_key["storage-leak"].incident is not None and by_key["storage-leak"].incident.kind == "leak"
    assert by_key["weekend-dip"].incident is None  # a drop is reported, never alerted
    gpu_job = by_key["forgotten-gpu-job"]  # the EKS cluster's forgotten 16-GPU Job, named with its owner
    assert gpu_job.correct and gpu_job.named == "fatima.zahra@example.com"
    assert gpu_job.incident is not None and gpu_job.incident.jobs[0].platform == "kubernetes"
    assert "Kubernetes Job llm-pretrain-fatima in eks-ml-train/research" in gpu_job.incident.culprit_sentence()
    suspend = [a for a in result.plan.dry_run if a.target.resource_type == "k8s-job"]
    assert [(a.verb, a.mode, a.target.resource_id, a.target.account) for a in suspend] == [
        ("suspend", "dry-run", "research/llm-pretrain-fatima", "eks-ml-train")
    ]
    store = Store(result.digest[0].parent.parent / "store.duckdb", clock=clock)
    dip = by_key["weekend-dip"].injected
    drops = [
        i
        for i in load_incidents(store, kinds=["drop"], statuses=None)
        if i.dimensions.get("sub_account_id") == dip.sub_account_id
    ]
    assert drops and all(i.status == "reported" and not i.is_alerting for i in drops)
    assert all(f.correct for f in findings)
    assert match_injected([dip], [])[0].correct


def test_cli_lists_shows_and_acknowledges(tmp_path: Path, clock: FixedClock) -> None:
    cfg_path = tmp_path / "sw.yaml"
    cfg_path.write_text(
        "store: {path: s.duckdb}\nsources:\n  - {name: bills, type: focus, path: unused, settle_lag: 2h}\n"
        "monitors:\n  - {name: svc, dimensions: [provider, sub_account_id, service_name], granularity: [daily]}\n"
    )
    cfg = config(tmp_path)
    store = Store(cfg.store.path, clock=clock)
    load(store, series(spike_at=DAYS - 1, spike=4000.0))
    run_detection(cfg, store, clock)
    runner = CliRunner()
    listed = runner.invoke(main, ["-c", str(cfg_path), "anomalies", "list"])
    assert listed.exit_code == 0 and "aws / 111111111111 / Amazon EC2" in listed.output
    incident_id = load_incidents(store)[0].id
    shown = runner.invoke(main, ["-c", str(cfg_path), "anomalies", "show", str(incident_id)])
    assert (shown.exit_code == 0 and "contributors" in shown.output) or "culprit" in shown.output
    acked = runner.invoke(main, ["-c", str(cfg_path), "anomalies", "ack", str(incident_id), "--as", "ops"])
    assert acked.exit_code == 0
    missing = runner.invoke(main, ["-c", str(cfg_path), "anomalies", "show", "999"])
    assert missing.exit_code == 2 and "no anomaly with id 999" in missing.output
    assert "Traceback" not in missing.output


# --- recurring charges the bill declares (FOCUS ChargeFrequency), hourly local clocks -----------------

FEES = (
    "monitors:\n  - {name: all, dimensions: [provider], granularity: [daily], charge_categories: [Usage, Purchase]}\n"
)


def fee_rows(days: list[int], amounts: list[float], frequency: str | None) -> list[dict[str, object]]:
    return [
        {"start": START + timedelta(days=d), "cost": a, "charge_category": "Purchase", "charge_frequency": frequency}
        for d, a in zip(days, amounts, strict=True)
    ]


def alerts_with_fees(
    tmp_path: Path,
    clock: FixedClock,
    amounts: list[float],
    frequency: str | None,
    fee_days: tuple[int, ...] = (65, 96),
    detection: str = f"rescore_daily: {DAYS - 30}",
) -> list[datetime]:
    """Alerts of a monthly fee on ``fee_days`` (by default 2026-10-05 and 11-05), every day from day 30 re-scored."""
    text = (
        "store: {path: s.duckdb}\nsources:\n  - {name: bills, type: focus, path: unused, settle_lag: 2h}\n"
        f"detection: {{{detection}}}\n{FEES}"
    )
    cfg = parse_config(text, tmp_path / "sw.yaml", environ={})
    store = Store(cfg.store.path, clock=clock)
    usage = [{"start": START + timedelta(days=i), "cost": c} for i, c in enumerate(series(seed=3))]
    store.replace_cost_lines("bills", START, START + timedelta(days=DAYS), cost_lines(usage))
    store.replace_cost_lines(
        "fees", START, START + timedelta(days=DAYS), cost_lines(fee_rows(fee_days, amounts, frequency))
    )
    run_detection(cfg, store, clock)
    return [i.first_seen for i in load_incidents(store, statuses=None) if i.kind != "drop"]


def test_a_declared_recurring_fee_of_its_usual_size_never_alerts(tmp_path: Path, clock: FixedClock) -> None:
    assert alerts_with_fees(tmp_path, clock, [8000.0, 8000.0], "Recurring") == []


def test_a_declared_recurring_fee_bigger_than_before_alerts(tmp_path: Path, clock: FixedClock) -> None:
    assert alerts_with_fees(tmp_path, clock, [8000.0, 24000.0], "Recurring") == [START + timedelta(days=96)]


def test_without_charge_frequency_the_first_fee_alerts_and_the_next_ones_are_learnt(
    tmp_path: Path, clock: FixedClock
) -> None:
    """From totals alone a fee is learnt where most of the months judged before it had it (a tie counts).
    2026-09-05 alerts; at 10-05 one month had the fee and one (08-05) did not; at 11-05 two of three did."""
    fees = alerts_with_fees(tmp_path, clock, [8000.0, 8000.0, 8000.0], None, fee_days=(35, 65, 96))
    assert fees == [START + timedelta(days=35)]


def test_without_charge_frequency_a_fee_seen_once_in_three_months_still_alerts(
    tmp_path: Path, clock: FixedClock
) -> None:
    """One month with the fee against two without (08-05 and 09-05) is no majority: 11-05 alerts again."""
    fees = alerts_with_fees(tmp_path, clock, [8000.0, 8000.0], None)
    assert sorted(fees) == [START + timedelta(days=65), START + timedelta(days=96)]


def test_a_monitor_time_zone_must_be_a_known_zone(tmp_path: Path) -> None:
    from spendwatch.errors import ConfigError

    text = (
        "store: {path: s.duckdb}\nsources:\n  - {name: bills, type: focus, path: unused}\nmonitors:\n"
        "  - {name: svc, dimensions: [provider], granularity: [hourly], time_zones: [Mars/Olympus]}\n"
    )
    with pytest.raises(ConfigError, match="Mars/Olympus"):
        parse_config(text, tmp_path / "sw.yaml", environ={})


def test_a_history_window_shorter_than_the_data_gives_no_series_a_first_quarter(
    tmp_path: Path, clock: FixedClock
) -> None:
    """A fee on every 5th since 2026-08-05, three times its size on 11-05. With 45 days of history the
    panel starts on 09-24 and every quarterly slot of 11-05 (08-05, 05-05, 02-05) lies before it; the
    series runs from the panel's first day, but the store holds its earlier months, so 11-05 is no
    first quarterly true-up (charges.quarter_unseen, history_cut): the bigger fee alerts."""
    fees = alerts_with_fees(
        tmp_path, clock, [8000.0, 8000.0, 8000.0, 24000.0], None, (4, 35, 65, 96), "history: 45d, rescore_daily: 35"
    )
    assert fees == [START + timedelta(days=96)]
