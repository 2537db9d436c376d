"""Budgets: every scope (team, owner, account/project, tag, all of them, none), currency, state, config
errors, and the one alert per budget and month when the forecast's interval crosses it."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from spendwatch.config import parse_config
from spendwatch.errors import ConfigError
from spendwatch.notify.alerts import run_alerts
from spendwatch.notify.budgets import BudgetConfig, budget_statuses
from tests.doubles.clock import FixedClock
from tests.notify import small_estate
from tests.notify.small_estate import NOW, REPORT_DAY, month_total

NOVEMBER = date(2026, 11, 1)


def tag(row: dict[str, Any], key: str) -> str | None:
    return dict(row["tags"]).get(key)


SCOPES: list[tuple[dict[str, Any], Any]] = [
    ({"team": "ml-research"}, lambda r: tag(r, "team") == "ml-research"),
    ({"owners": ["BEN@*"]}, lambda r: (r["owner"] or "").startswith("ben@")),  # globs are case-insensitive
    ({"accounts": ["4567*"]}, lambda r: r["sub_account_id"].startswith("4567")),  # includes the purchase
    ({"tags": {"cost-center": ["cc-4*"]}}, lambda r: (tag(r, "cost-center") or "").startswith("cc-4")),
    ({}, lambda r: True),
    ({"team": "serving", "accounts": ["456789012345"]}, lambda r: r["sub_account_id"] == "456789012345"),
    ({"team": "untagged"}, lambda r: tag(r, "team") is None),
]


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    return small_estate.build(tmp_path_factory.mktemp("small"), FixedClock(NOW))


@pytest.mark.parametrize(
    ("scope", "keep"), SCOPES, ids=["team", "owner", "account", "tag", "estate", "both", "untagged"]
)
def test_a_budget_counts_exactly_the_lines_of_its_scope(
    small: tuple[Any, Any], scope: dict[str, Any], keep: Any
) -> None:
    config, store = small
    budget = BudgetConfig.model_validate({"name": "b", "amount": 1.0, **scope})
    [status] = budget_statuses([budget], config.notify, store, REPORT_DAY)
    assert status.forecast.to_date == pytest.approx(month_total(NOVEMBER, currency="USD", keep=keep))
    assert status.forecast.currency == "USD" and status.forecast.days_covered == 3


def test_only_lines_billed_in_the_budgets_currency_count(small: tuple[Any, Any]) -> None:
    config, store = small
    euros = BudgetConfig.model_validate({"name": "eu", "amount": 9000, "currency": "eur", "team": "ml-research"})
    yen = BudgetConfig.model_validate({"name": "jp", "amount": 10_000_000, "currency": "JPY"})
    nothing = BudgetConfig.model_validate({"name": "chf", "amount": 5, "currency": "CHF"})
    eu, jp, chf = budget_statuses([euros, yen, nothing], config.notify, store, REPORT_DAY)
    assert eu.budget.currency == "EUR"
    assert eu.forecast.to_date == pytest.approx(month_total(NOVEMBER, currency="EUR"))
    assert jp.forecast.to_date == pytest.approx(month_total(NOVEMBER, currency="JPY"))
    assert (chf.forecast.to_date, chf.forecast.forecast, chf.state) == (0.0, 0.0, "ok")


def test_the_state_says_where_the_month_ends_against_the_budget(small: tuple[Any, Any]) -> None:
    config, store = small
    base = BudgetConfig.model_validate({"name": "estate", "amount": 1.0})
    [probe] = budget_statuses([base], config.notify, store, REPORT_DAY)
    f = probe.forecast
    assert f.to_date < f.lower < f.forecast < f.upper
    amounts = {
        "ok": f.upper * 1.1,
        "at-risk": (f.lower + f.forecast) / 2,  # the forecast is over, its interval is not yet
        "will-exceed": (f.to_date + f.lower) / 2,  # the whole interval is over
        "over": f.to_date * 0.9,  # already spent
    }
    budgets = [base.model_copy(update={"name": state, "amount": amount}) for state, amount in amounts.items()]
    states = [s.state for s in budget_statuses(budgets, config.notify, store, REPORT_DAY)]
    assert states == list(amounts)


@pytest.mark.parametrize(
    ("budgets", "message"),
    [
        ([{"name": "x", "amount": 10, "currency": "dollars"}], "budgets[0].currency: 'dollars' is not an ISO 4217"),
        ([{"name": "x", "amount": 0}], "budgets[0].amount"),
        ([{"name": "x", "amount": 5, "owner": "ben"}], "budgets[0].owner"),
        ([{"name": "x", "amount": 5}, {"name": "x", "amount": 6}], "budgets: the name 'x' is used twice"),
    ],
)
def test_a_bad_budget_is_one_line_naming_its_key(tmp_path: Path, budgets: list[Any], message: str) -> None:
    import yaml

    sources = [{"name": "bills", "type": "focus", "path": "unused"}]
    text = yaml.safe_dump({"store": {"path": "s.duckdb"}, "sources": sources, "budgets": budgets})
    with pytest.raises(ConfigError) as raised:
        parse_config(text, tmp_path / "sw.yaml", environ={})
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_the_budget_alert_fires_once_a_month_when_the_interval_crosses_it(tmp_path: Path) -> None:
    clock = FixedClock(NOW)
    config, store = small_estate.build(tmp_path, clock)
    [probe] = budget_statuses([BudgetConfig(name="p", amount=1.0)], config.notify, store, REPORT_DAY)
    crossing = (probe.forecast.to_date + probe.forecast.lower) / 2
    at_risk = (probe.forecast.lower + probe.forecast.forecast) / 2
    config, store = small_estate.build(
        tmp_path,
        clock,
        budgets=[
            {"name": "estate", "amount": round(crossing, 2)},
            {"name": "watch", "amount": round(at_risk, 2)},
            {"name": "ml", "team": "ml-research", "amount": 10.0},
        ],
        notify={
            "channels": [{"name": "outbox", "type": "folder", "path": "outbox"}],
            "alerts": {"channels": ["outbox"], "recipients": ["finops@example.com"]},
            "routes": [{"name": "ml-research", "recipients": ["ml@example.com"]}],
        },
    )

    first = run_alerts(config, store, clock)
    again = run_alerts(config, store, clock)

    sent = {r[0] for r in store.query("SELECT key FROM alerts_sent")}
    assert sent == {"budget:estate:2026-11", "budget:ml:2026-11"}  # "watch" is only at risk: no alert
    assert (first.sent, again.sent, again.failed) == (2, 0, 0)
    payload = json.loads((tmp_path / "outbox" / "alert-budget_estate_2026-11.json").read_text())
    assert "budget estate will be over" in payload["text"]
    team_mail = (tmp_path / "outbox" / "alert-budget_ml_2026-11.eml").read_text()
    assert "ml@example.com" in team_mail and "finops@example.com" in team_mail  # the team's route, and FinOps
    assert "budget ml is already over $10.00 in November 2026" in team_mail

    # The forecast falls back under the budget and crosses again: still one alert this month.
    clock.advance(hours=6)
    assert run_alerts(config, store, clock).sent == 0
    assert store.query("SELECT count(*) FROM alerts_sent WHERE key LIKE 'budget:%'")[0][0] == 2
