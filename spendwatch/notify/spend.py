"""The digest's spend figures, read from the store: the report day per provider and account against
expected, the month's forecast, the per-team table, the day's costliest jobs, fees and credits.

Every query takes an optional ``scope`` (SQL condition + parameters, e.g. one team's lines), so a
team's digest and the FinOps digest are built by the same code from the same numbers.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from spendwatch.forecast import MonthForecast
from spendwatch.store import Store

Scope = tuple[str, list[Any]]
EVERYTHING: Scope = ("TRUE", [])


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


@dataclass(frozen=True)
class SpendRow:
    """Spend on the report day for a provider (or one account, or a team) in one currency, against expected."""

    provider: str
    currency: str
    actual: float
    expected: float | None
    account_id: str | None = None
    account_name: str | None = None

    @property
    def delta(self) -> float | None:
        return None if self.expected is None else self.actual - self.expected

    @property
    def delta_pct(self) -> float | None:
        if self.expected is None or abs(self.expected) < 0.005:
            return None
        return (self.actual - self.expected) / abs(self.expected)

    @property
    def label(self) -> str:
        if self.account_id is None:
            return self.provider
        if self.account_name and self.account_name != self.account_id:
            return f"{self.account_name} ({self.account_id})"
        return self.account_id


@dataclass(frozen=True)
class TeamRow:
    """One team in the FinOps digest's table: yesterday, the month and its budget."""

    team: str
    spend: SpendRow
    month: MonthForecast
    budget: float | None
    incidents: int
    has_digest: bool

    @property
    def budget_state(self) -> str | None:
        if self.budget is None:
            return None
        if self.month.to_date > self.budget:
            return "over"
        if self.month.lower > self.budget:
            return "will-exceed"
        return "at-risk" if self.month.forecast > self.budget else "ok"


@dataclass(frozen=True)
class JobRow:
    platform: str
    job_id: str
    name: str | None
    user: str | None
    account: str | None
    cost: float
    currency: str
    state: str

    @property
    def what(self) -> str:
        return {"bigquery": "query", "athena": "query"}.get(self.platform, f"{self.platform} job")


@dataclass(frozen=True)
class ChargeRow:
    provider: str
    category: str
    service: str | None
    account: str | None
    currency: str
    amount: float


def report_day_spend(
    store: Store, report_day: date, column: str, top: int, scope: Scope = EVERYTHING
) -> tuple[list[SpendRow], list[SpendRow]]:
    """Report-day usage per provider and per account, against the same weekday of the 4 weeks before."""
    days = [report_day - timedelta(days=7 * k) for k in range(5)]
    where, params = scope
    rows = store.query(
        f"SELECT CAST(date_trunc('day', charge_period_start) AS DATE) AS day, provider, sub_account_id, "
        f"any_value(sub_account_name), billing_currency, sum({column}) FROM cost_lines "
        f"WHERE charge_category = 'Usage' AND ({where}) AND CAST(date_trunc('day', charge_period_start) AS DATE) IN "
        f"({', '.join('?' * len(days))}) GROUP BY ALL",
        [*params, *days],
    )
    per_account: dict[tuple[str, str | None, str], dict[date, float]] = defaultdict(dict)
    names: dict[tuple[str, str | None, str], str | None] = {}
    for day, provider, account, name, currency, cost in rows:
        key = (provider, account, currency)
        per_account[key][day] = float(cost)
        names[key] = name or names.get(key)
    per_provider: dict[tuple[str, str], dict[date, float]] = defaultdict(lambda: defaultdict(float))
    for (provider, _, currency), series in per_account.items():
        for day, cost in series.items():
            per_provider[(provider, currency)][day] += cost
    seen_days = {d for series in per_account.values() for d in series}

    def expected(series: dict[date, float]) -> float | None:
        history = [series.get(d, 0.0) for d in days[1:] if d in seen_days]
        return statistics.median(history) if history else None

    providers = [
        SpendRow(provider, currency, series.get(report_day, 0.0), expected(series))
        for (provider, currency), series in sorted(per_provider.items())
    ]
    accounts = [
        SpendRow(provider, currency, series.get(report_day, 0.0), expected(series), account, names.get(key))
        for key, series in per_account.items()
        for provider, account, currency in [key]
        if series.get(report_day, 0.0) > 0 or (expected(series) or 0) > 0
    ]
    accounts.sort(key=lambda r: (r.provider, -r.actual))
    top_accounts: list[SpendRow] = []
    counts: dict[str, int] = defaultdict(int)
    for row in accounts:
        if counts[row.provider] < top:
            top_accounts.append(row)
            counts[row.provider] += 1
    return providers, top_accounts


def month_forecasts(store: Store, report_day: date, column: str, scope: Scope = EVERYTHING) -> list[MonthForecast]:
    """One month-end forecast per currency billed this month in the scope."""
    from spendwatch.notify.budgets import scope_forecasts

    where, params = scope
    return list(scope_forecasts(store, where, params, report_day, column=column).values())


def team_forecasts(
    store: Store, report_day: date, column: str, team_expression: Scope
) -> dict[tuple[str, str], MonthForecast]:
    """(team, currency) → month-end forecast, every team from one query."""
    from spendwatch.notify.budgets import scope_forecasts

    found = scope_forecasts(store, "TRUE", [], report_day, column=column, group=team_expression)
    return {(str(team), currency): forecast for (team, currency), forecast in found.items()}


def team_spend(store: Store, report_day: date, column: str, team_expression: Scope) -> dict[tuple[str, str], SpendRow]:
    """(team, currency) → report-day usage against the same weekday of the four weeks before."""
    days = [report_day - timedelta(days=7 * k) for k in range(5)]
    expression, params = team_expression
    rows = store.query(
        f"SELECT {expression} AS team, billing_currency, CAST(date_trunc('day', charge_period_start) AS DATE) AS day, "
        f"sum({column}) FROM cost_lines WHERE charge_category = 'Usage' AND "
        f"CAST(date_trunc('day', charge_period_start) AS DATE) IN ({', '.join('?' * len(days))}) GROUP BY ALL",
        [*params, *days],
    )
    series: dict[tuple[str, str], dict[date, float]] = defaultdict(dict)
    for team, currency, day, cost in rows:
        series[(team, currency)][day] = float(cost or 0.0)
    seen_days = {d for s in series.values() for d in s}
    out = {}
    for (team, currency), values in series.items():
        history = [values.get(d, 0.0) for d in days[1:] if d in seen_days]
        expected = statistics.median(history) if history else None
        out[(team, currency)] = SpendRow(team, currency, values.get(report_day, 0.0), expected)
    return out


def top_jobs(store: Store, report_day: date, limit: int = 200) -> list[JobRow]:
    """Jobs that started on the report day, costliest first (estimated cost of the whole job)."""
    rows = store.query(
        'SELECT platform, job_id, name, coalesce("user", owner), sub_account_id, estimated_cost, '
        "coalesce(billing_currency, 'USD'), state FROM jobs WHERE start_time >= ? AND start_time < ? "
        "AND estimated_cost > 0 ORDER BY estimated_cost DESC LIMIT ?",
        [day_start(report_day), day_start(report_day + timedelta(days=1)), limit],
    )
    return [JobRow(r[0], r[1], r[2], r[3], r[4], float(r[5]), r[6], r[7]) for r in rows]


def charges(store: Store, start: datetime, end: datetime, column: str, scope: Scope = EVERYTHING) -> list[ChargeRow]:
    where, params = scope
    rows = store.query(
        f"SELECT provider, charge_category, service_name, sub_account_id, billing_currency, sum({column}) AS amount "
        f"FROM cost_lines WHERE charge_category <> 'Usage' AND ({where}) AND charge_period_start >= ? "
        "AND charge_period_start < ? GROUP BY ALL HAVING abs(amount) >= 0.005 ORDER BY abs(amount) DESC LIMIT 20",
        [*params, start, end],
    )
    return [ChargeRow(r[0], r[1], r[2], r[3], r[4], float(r[5])) for r in rows]
