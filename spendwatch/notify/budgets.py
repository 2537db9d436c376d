"""Monthly budgets and where each one's month will end (``budgets:`` in the config).

A budget names a monthly amount in one currency and a scope — a team (see ``notify.teams``), owner
globs, account/project globs, tag globs, or nothing (the whole estate); several given must all hold.
Its forecast is ``forecast.forecast_month`` over the scope's daily usage, with the scope's fees,
credits and taxes as known charges. A budget's state:

* ``over`` — the month to date already passed it;
* ``will-exceed`` — the whole 80% interval is above it: the forecast crossed it *with its interval*,
  which is when the one alert per budget and month fires (``alerts``: key ``budget:<name>:<YYYY-MM>``);
* ``at-risk`` — the forecast is above it, its interval is not yet;
* ``ok``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
from pydantic import Field, field_validator

from spendwatch.config_types import Name
from spendwatch.forecast import MonthForecast, daily_series, forecast_month, known_future_charges, month_bounds
from spendwatch.plugins import StrictModel
from spendwatch.store import Store

if TYPE_CHECKING:
    from spendwatch.notify.config import NotifyConfig

HISTORY_DAYS = 120
BudgetState = Literal["ok", "at-risk", "will-exceed", "over"]
BUDGET_STATES: tuple[BudgetState, ...] = ("ok", "at-risk", "will-exceed", "over")


class BudgetConfig(StrictModel):
    """One monthly budget. With no scope key it covers the whole estate."""

    name: Name
    amount: float = Field(gt=0, description="the monthly budget, in ``currency``")
    currency: str = Field(default="USD", description="ISO 4217 code; only cost lines billed in it count")
    team: str | None = Field(default=None, description="a team: a notify.routes name or a team-tag value")
    owners: list[str] = Field(default_factory=list, description="owner globs")
    accounts: list[str] = Field(default_factory=list, description="AWS account / GCP project id globs")
    tags: dict[str, list[str]] = Field(default_factory=dict, description="tag key → value globs")

    @field_validator("currency")
    @classmethod
    def _iso_code(cls, value: str) -> str:
        code = value.strip().upper()
        if len(code) != 3 or not code.isalpha():
            raise ValueError(f"{value!r} is not an ISO 4217 currency code (USD, EUR, JPY …)")
        return code

    @property
    def scope(self) -> str:
        parts = [f"team {self.team}"] if self.team else []
        parts += [f"owners {', '.join(self.owners)}"] if self.owners else []
        parts += [f"accounts {', '.join(self.accounts)}"] if self.accounts else []
        parts += [f"{key} {', '.join(values)}" for key, values in self.tags.items()]
        return "; ".join(parts) or "the whole estate"


@dataclass(frozen=True)
class BudgetStatus:
    budget: BudgetConfig
    forecast: MonthForecast

    @property
    def state(self) -> BudgetState:
        amount = self.budget.amount
        if self.forecast.to_date > amount:
            return "over"
        if self.forecast.lower > amount:
            return "will-exceed"
        if self.forecast.forecast > amount:
            return "at-risk"
        return "ok"

    @property
    def used(self) -> float:
        return self.forecast.to_date / self.budget.amount

    @property
    def alert_key(self) -> str:
        return f"budget:{self.budget.name}:{self.forecast.month_start:%Y-%m}"


def scope_sql(budget: BudgetConfig, notify: NotifyConfig) -> tuple[str, list[Any]]:
    """SQL conditions on ``cost_lines`` for the budget's scope (values only as parameters)."""
    from spendwatch.notify.teams import team_sql

    clauses = ["billing_currency = ?"]
    params: list[Any] = [budget.currency]
    if budget.team:
        expression, team_params = team_sql(notify)
        clauses.append(f"{expression} = ?")
        params += [*team_params, budget.team]
    for column, patterns in (("owner", budget.owners), ("sub_account_id", budget.accounts)):
        if patterns:
            clauses.append("(" + " OR ".join(f"lower(coalesce({column}, '')) GLOB ?" for _ in patterns) + ")")
            params += [p.lower() for p in patterns]
    for key, patterns in budget.tags.items():
        clauses.append("(" + " OR ".join("lower(coalesce(tags[?], '')) GLOB ?" for _ in patterns) + ")")
        params += [value for p in patterns for value in (key, p.lower())]
    return " AND ".join(clauses), params


Group = tuple[str, list[Any]]


def scope_forecasts(
    store: Store,
    where: str,
    params: list[Any],
    as_of: date,
    *,
    column: str = "effective_cost",
    group: Group | None = None,
) -> dict[tuple[str | None, str], MonthForecast]:
    """Month-end forecasts of the cost lines matching ``where`` with data up to ``as_of``, one per
    (group value, currency) billed this month — ``group``: a SQL expression and its parameters (the
    team, say), or none (``None`` in the key). One query for every group."""
    first, _ = month_bounds(as_of)
    previous_first = month_bounds(first - timedelta(days=1))[0]
    start = min(as_of - timedelta(days=HISTORY_DAYS), previous_first)
    end = datetime.combine(as_of + timedelta(days=1), time(0), tzinfo=UTC)
    expression, group_params = group if group is not None else ("NULL", [])
    rows = store.query(
        f"SELECT {expression} AS grp, billing_currency, CAST(date_trunc('day', charge_period_start) AS DATE) AS day, "
        f"charge_category = 'Usage', sum({column}) FROM cost_lines WHERE ({where}) AND charge_period_start >= ? "
        "AND charge_period_start < ? GROUP BY ALL",
        [*group_params, *params, datetime.combine(start, time(0), tzinfo=UTC), end],
    )
    usage: dict[tuple[str | None, str], dict[date, float]] = defaultdict(lambda: defaultdict(float))
    other: dict[tuple[str | None, str], dict[date, float]] = defaultdict(lambda: defaultdict(float))
    this_month: set[tuple[str | None, str]] = set()
    for grp, currency, day, is_usage, cost in rows:
        key = (None if grp is None else str(grp), str(currency))
        (usage if is_usage else other)[key][day] += float(cost or 0.0)
        if first <= day <= as_of:
            this_month.add(key)
    out = {}
    for key in sorted(this_month, key=lambda k: (k[0] or "", k[1])):
        charges = other.get(key, {})
        out[key] = forecast_month(
            daily_series(usage.get(key, {}), start, as_of),
            as_of,
            currency=key[1],
            other_to_date=sum(v for d, v in charges.items() if first <= d <= as_of),
            known_charges=known_future_charges(charges, as_of),
        )
    return out


def scope_forecast(
    store: Store, where: str, params: list[Any], as_of: date, *, currency: str, column: str = "effective_cost"
) -> MonthForecast:
    """The month-end forecast of the cost lines matching ``where`` billed in ``currency`` (nothing
    billed this month: a month of zeros)."""
    found = scope_forecasts(store, f"({where}) AND billing_currency = ?", [*params, currency], as_of, column=column)
    empty = pd.Series(dtype=float, index=pd.DatetimeIndex([], freq="D"))
    return found.get((None, currency)) or forecast_month(empty, as_of, currency=currency)


def budget_statuses(
    budgets: list[BudgetConfig], notify: NotifyConfig, store: Store, as_of: date, *, column: str = "effective_cost"
) -> list[BudgetStatus]:
    out = []
    for budget in budgets:
        where, params = scope_sql(budget, notify)
        forecast = scope_forecast(store, where, params, as_of, currency=budget.currency, column=column)
        out.append(BudgetStatus(budget, forecast))
    return out
