"""Spend gauges on /metrics: the store's figures, bounded labels whatever the data holds, refreshed lazily."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from spendwatch.config import Config
from spendwatch.daemon.spend_metrics import SpendCollector, local_bounds
from spendwatch.store import Store
from spendwatch.store.schema import COST_LINE_SCHEMA
from tests.doubles.clock import FixedClock
from tests.notify.estate import NOW, copy_store, insert_incident, load, write_config

HOSTILE = ['acct"} evil 1\n# HELP x', "\x1b]52;c;SGVsbG8=\x07", "a\\b", "\u202eflipped", "x" * 500]


def scrape(config: Config, store: Store, clock: FixedClock) -> tuple[str, dict[str, dict[tuple[Any, ...], float]]]:
    registry = CollectorRegistry(auto_describe=False)
    SpendCollector(config, store, clock, registry=registry)
    return parse(generate_latest(registry).decode())


def parse(text: str) -> tuple[str, dict[str, dict[tuple[Any, ...], float]]]:
    out: dict[str, dict[tuple[Any, ...], float]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return text, out


def setup(tmp_path: Path, estate_store: Path, **spend: Any) -> tuple[Config, Store, FixedClock]:
    config = load(write_config(tmp_path, daemon={"health": {"spend": spend}} if spend else {}))
    copy_store(estate_store, tmp_path)
    clock = FixedClock(NOW)
    return config, Store(config.store.path, clock=clock), clock


def totals(store: Store, start: datetime, end: datetime) -> dict[tuple[str, str], float]:
    rows = store.query(
        "SELECT provider, billing_currency, sum(effective_cost) FROM cost_lines "
        "WHERE charge_period_start >= ? AND charge_period_start < ? GROUP BY ALL",
        [start, end],
    )
    return {(p, c): float(v) for p, c, v in rows}


def by_provider(samples: dict[tuple[Any, ...], float]) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = defaultdict(float)
    for labels, value in samples.items():
        named = dict(labels)
        out[(named["provider"], named["currency"])] += value
    return dict(out)


def test_spend_yesterday_and_month_to_date_match_the_store(tmp_path: Path, estate_store: Path) -> None:
    config, store, clock = setup(tmp_path, estate_store)
    _, metrics = scrape(config, store, clock)

    yesterday = by_provider(metrics["spendwatch_spend_yesterday"])
    month = by_provider(metrics["spendwatch_spend_month_to_date"])
    day = datetime(2026, 11, 19, tzinfo=UTC)
    assert yesterday == pytest.approx(totals(store, day, day + timedelta(days=1)))
    assert month == pytest.approx(totals(store, datetime(2026, 11, 1, tzinfo=UTC), NOW))
    accounts = {dict(k)["account"] for k in metrics["spendwatch_spend_month_to_date"]}
    assert len(accounts) > 3 and "other" not in accounts  # the estate has 10 accounts: all under the default 20
    assert metrics["spendwatch_spend_refreshed_timestamp_seconds"][()] == NOW.timestamp()


def test_accounts_beyond_top_n_are_summed_as_other(tmp_path: Path, estate_store: Path) -> None:
    config, store, clock = setup(tmp_path, estate_store, top_accounts=2, top_providers=1)
    _, metrics = scrape(config, store, clock)

    month = metrics["spendwatch_spend_month_to_date"]
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for labels in month:
        named = dict(labels)
        groups[(named["provider"], named["currency"])].append(named["account"])
    assert all(len(accounts) <= 3 for accounts in groups.values())  # 2 named + other
    month_totals = totals(store, datetime(2026, 11, 1, tzinfo=UTC), NOW)
    biggest = max(month_totals, key=lambda key: month_totals[key])[0]
    assert {provider for provider, _ in groups} == {biggest, "other"}  # one provider named, the other folded
    assert sum(month.values()) == pytest.approx(sum(month_totals.values()))  # nothing lost in the folding
    folded = metrics["spendwatch_spend_folded_values"]
    assert folded[(("label", "account"),)] > 0 and folded[(("label", "provider"),)] == 1


def test_hostile_and_countless_accounts_keep_the_exposition_valid_and_bounded(
    tmp_path: Path, estate_store: Path
) -> None:
    config, store, clock = setup(tmp_path, estate_store, top_accounts=5, max_currencies=2)
    day = datetime(2026, 11, 19, tzinfo=UTC)
    accounts = HOSTILE + [f"acct-{n}" for n in range(2000)]
    currencies = ["USD"] * len(accounts)
    currencies[:4] = ["<b>EUR</b>", "JPY\n", "XAU", "XAG"]
    lines = pa.table(
        {
            "provider": ["aws"] * len(accounts),
            "sub_account_id": accounts,
            "charge_category": ["Usage"] * len(accounts),
            "charge_period_start": pa.array([day] * len(accounts), pa.timestamp("us", tz="UTC")),
            "charge_period_end": pa.array([day + timedelta(days=1)] * len(accounts), pa.timestamp("us", tz="UTC")),
            "billed_cost": [1000.0 + n for n in range(len(accounts))],
            "effective_cost": [1000.0 + n for n in range(len(accounts))],
            "billing_currency": currencies,
        }
    )
    store.replace_cost_lines("hostile", day, day + timedelta(days=1), lines.cast(_subset(lines)))

    text, metrics = scrape(config, store, clock)

    assert not any(ch in text for ch in "\x1b\x07\u202e")  # no control or bidi character in the exposition
    month = metrics["spendwatch_spend_month_to_date"]
    assert len(month) <= 2 * 10 * 6  # currencies × providers × (accounts + other)
    labels = {value for key in month for _, value in key}
    assert all(len(value) <= 100 for value in labels)
    assert {dict(k)["currency"] for k in month} <= {"USD", "EUR", "JPY\\n", "<b>EUR</b>", "XAU", "XAG"}
    assert len({dict(k)["currency"] for k in month}) == 2
    assert metrics["spendwatch_spend_folded_values"][(("label", "currency"),)] >= 3


def _subset(table: pa.Table) -> pa.Schema:
    return pa.schema([COST_LINE_SCHEMA.field(name) for name in table.column_names])


def test_figures_are_cached_for_the_refresh_interval(tmp_path: Path, estate_store: Path) -> None:
    config, store, clock = setup(tmp_path, estate_store, refresh="10m")
    registry = CollectorRegistry(auto_describe=False)
    SpendCollector(config, store, clock, registry=registry)
    first = parse(generate_latest(registry).decode())[1]
    insert_incident(store, severity="critical", impact=12_345.0)

    clock.advance(minutes=9)
    cached = parse(generate_latest(registry).decode())[1]
    assert cached == first  # same figures, same refreshed timestamp

    clock.advance(minutes=2)
    fresh = parse(generate_latest(registry).decode())[1]
    excess = fresh["spendwatch_incidents_open_excess"]
    assert excess[(("currency", "USD"), ("severity", "critical"))] == pytest.approx(
        first["spendwatch_incidents_open_excess"].get((("currency", "USD"), ("severity", "critical")), 0.0) + 12_345.0
    )
    assert fresh["spendwatch_spend_refreshed_timestamp_seconds"][()] == (NOW + timedelta(minutes=11)).timestamp()


def test_open_incident_excess_matches_the_store(tmp_path: Path, estate_store: Path) -> None:
    config, store, clock = setup(tmp_path, estate_store)
    _, metrics = scrape(config, store, clock)
    rows = store.query(
        "SELECT severity, billing_currency, sum(impact) FROM anomalies "
        "WHERE status IN ('open', 'ongoing') AND kind <> 'drop' GROUP BY ALL"
    )
    expected = {(("currency", c), ("severity", s)): float(v) for s, c, v in rows}
    assert expected and metrics["spendwatch_incidents_open_excess"] == pytest.approx(expected)


def test_guard_burn_rates_by_platform(tmp_path: Path, estate_store: Path) -> None:
    path = write_config(tmp_path, daemon={"health": {"spend": {"top_platforms": 1}}})
    data = yaml.safe_load(path.read_text())
    data["sources"].append({"name": "gcp-jobs", "type": "gcp-jobs", "gcp": {"project": "p", "anonymous": True}})
    path.write_text(yaml.safe_dump(data))
    config = load(path)
    copy_store(estate_store, tmp_path)
    clock = FixedClock(NOW)
    store = Store(config.store.path, clock=clock)
    with store.transaction() as con:
        for n, (platform, cost) in enumerate([("bigquery", 750.0), ("bigquery", 30.0), ("dataproc", 12.0)]):
            con.execute(
                "INSERT INTO jobs (platform, job_id, source, provider, sub_account_id, state, start_time, "
                "estimated_cost, billing_currency, first_seen, last_seen) VALUES (?, ?, 'guard:gcp-jobs', 'gcp', "
                "'p', 'RUNNING', ?, ?, 'USD', ?, ?)",
                [platform, f"job{n}", NOW - timedelta(hours=1), cost, NOW, NOW],
            )
    _, metrics = scrape(config, store, clock)
    from spendwatch.guard.status import guard_status

    jobs = guard_status(config, store, clock).jobs
    burn = metrics["spendwatch_guard_burn_rate_per_hour"]
    assert burn[(("currency", "USD"), ("platform", "bigquery"))] == pytest.approx(
        sum(j.burn_rate or 0 for j in jobs if j.platform == "bigquery")
    )
    assert burn[(("currency", "USD"), ("platform", "other"))] == pytest.approx(
        sum(j.burn_rate or 0 for j in jobs if j.platform == "dataproc")
    )
    assert metrics["spendwatch_guard_running_jobs"] == {(("platform", "bigquery"),): 2.0, (("platform", "other"),): 1.0}


@pytest.mark.parametrize(
    ("now", "zone", "expected"),
    [
        # Auckland is UTC+13 in November: 09:30 UTC on the 20th is 22:30 local on the 20th.
        ("2026-11-20T09:30:00+00:00", "Pacific/Auckland", ("2026-11-18T11:00", "2026-11-19T11:00", "2026-10-31T11:00")),
        # The day after Madrid's clocks went back (25 Oct 2026): yesterday was 25 hours long.
        ("2026-10-26T12:00:00+00:00", "Europe/Madrid", ("2026-10-24T22:00", "2026-10-25T23:00", "2026-09-30T22:00")),
        ("2026-11-01T00:30:00+00:00", "UTC", ("2026-10-31T00:00", "2026-11-01T00:00", "2026-11-01T00:00")),
    ],
)
def test_days_are_the_daemons_local_calendar_days(now: str, zone: str, expected: tuple[str, str, str]) -> None:
    bounds = local_bounds(datetime.fromisoformat(now), zone)
    assert tuple(b.strftime("%Y-%m-%dT%H:%M") for b in bounds) == expected
    assert all(b.tzinfo == UTC for b in bounds)


def test_spend_metrics_can_be_turned_off(tmp_path: Path, estate_store: Path) -> None:
    config, store, clock = setup(tmp_path, estate_store, enabled=False)
    text, _ = scrape(config, store, clock)
    assert "spendwatch_spend" not in text


def test_budgets_are_exposed_against_their_month_end_forecast(tmp_path: Path, estate_store: Path) -> None:
    from spendwatch.notify.budgets import budget_statuses

    budgets = [
        {"name": "estate", "amount": 1.0},  # far below what the estate spends: over
        {"name": "roomy", "amount": 1e12},  # far above: ok
        {"name": "aws-prod", "amount": 50_000.0, "accounts": ["1*"]},
    ]
    config = load(write_config(tmp_path, budgets=budgets))
    copy_store(estate_store, tmp_path)
    clock = FixedClock(NOW)
    store = Store(config.store.path, clock=clock)
    _, metrics = scrape(config, store, clock)

    as_of = NOW.date() - timedelta(days=1)  # the daemon's zone is UTC here: the last complete day
    expected = budget_statuses(config.budgets, config.notify, store, as_of)
    for status in expected:
        key = (("budget", status.budget.name), ("currency", "USD"))
        assert metrics["spendwatch_budget_amount"][key] == status.budget.amount
        assert metrics["spendwatch_budget_spent"][key] == pytest.approx(status.forecast.to_date)
        assert metrics["spendwatch_budget_forecast"][key] == pytest.approx(status.forecast.forecast)
        assert metrics["spendwatch_budget_forecast_lower"][key] <= metrics["spendwatch_budget_forecast"][key]
        assert metrics["spendwatch_budget_forecast_upper"][key] >= metrics["spendwatch_budget_forecast"][key]
        states = {dict(k)["state"]: v for k, v in metrics["spendwatch_budget_state"].items()
                  if dict(k)["budget"] == status.budget.name}  # fmt: skip
        assert states == {s: 1.0 if s == status.state else 0.0 for s in ("ok", "at-risk", "will-exceed", "over")}
    assert metrics["spendwatch_budget_spent"][(("budget", "estate"), ("currency", "USD"))] > 0
    assert dict(metrics["spendwatch_budget_state"])[(("budget", "estate"), ("state", "over"))] == 1.0
    assert dict(metrics["spendwatch_budget_state"])[(("budget", "roomy"), ("state", "ok"))] == 1.0


def test_no_budgets_no_budget_samples(tmp_path: Path, estate_store: Path) -> None:
    config, store, clock = setup(tmp_path, estate_store)
    text, metrics = scrape(config, store, clock)
    assert "# TYPE spendwatch_budget_forecast gauge" in text  # the family is known to Grafana even when empty
    assert not metrics.get("spendwatch_budget_forecast")
