"""``spendwatch budgets list``: each budget's month so far, its month-end forecast and interval, its state."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from spendwatch.cli_util import Env, handle_errors, pass_env


@click.group("budgets")
def budgets_group() -> None:
    """Monthly budgets (``budgets:`` in the config) against the month-end forecast."""


@budgets_group.command("list")
@click.option(
    "--date",
    "day",
    type=click.DateTime(["%Y-%m-%d"]),
    help="forecast with data up to this UTC day (default: yesterday, as the alerts do)",
)
@click.option("--json", "as_json", is_flag=True, help="JSON lines")
@pass_env
@handle_errors
def budgets_list(env: Env, day: datetime | None, as_json: bool) -> None:
    """List the budgets: spent so far, month-end forecast with its 80% interval, budget and state.

    States: ok; at-risk (the forecast is over); will-exceed (the whole interval is over: this is when
    the one alert per budget and month fires); over (already spent).
    """
    from spendwatch.money import format_money
    from spendwatch.notify.budgets import budget_statuses

    config = env.config
    as_of = day.date() if day else env.clock.now().astimezone(UTC).date() - timedelta(days=1)
    statuses = budget_statuses(config.budgets, config.notify, env.store, as_of, column=config.detection.cost_column)
    if as_json:
        for status in statuses:
            click.echo(json.dumps(_status_json(status), default=str))
        return
    if not statuses:
        click.echo("no budgets configured (add them under budgets: in the config; see docs/digest.md)")
        return
    click.echo(f"forecasts with data up to {as_of} (UTC)")
    header = ("BUDGET", "STATE", "SO FAR", "FORECAST", "80% INTERVAL", "AMOUNT")
    click.echo("{:<20} {:<12} {:>14} {:>14} {:>29} {:>14}  SCOPE".format(*header))
    for status in statuses:
        budget, forecast = status.budget, status.forecast

        def money(value: float, currency: str = budget.currency) -> str:
            return format_money(value, currency)

        interval = f"{money(forecast.lower)} – {money(forecast.upper)}"
        click.echo(
            f"{budget.name[:20]:<20} {status.state:<12} {money(forecast.to_date):>14} {money(forecast.forecast):>14} "
            f"{interval:>29} {money(budget.amount):>14}  {budget.scope}"
        )


def _status_json(status: Any) -> dict[str, Any]:
    budget, forecast = status.budget, status.forecast
    return {
        "name": budget.name,
        "state": status.state,
        "scope": budget.scope,
        "currency": budget.currency,
        "amount": budget.amount,
        "month": forecast.month_start.strftime("%Y-%m"),
        "as_of": forecast.as_of,
        "to_date": round(forecast.to_date, 2),
        "forecast": round(forecast.forecast, 2),
        "lower": round(forecast.lower, 2),
        "upper": round(forecast.upper, 2),
        "known_charges": round(forecast.known_charges, 2),
        "method": forecast.method,
        "alert_key": status.alert_key,
    }
