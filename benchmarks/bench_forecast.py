"""Month-end forecast backtest: spendwatch's seasonal forecast against the naive run-rate, same run.

Usage (from the repo root, venv active):

    python benchmarks/bench_forecast.py                     # both data sets
    python benchmarks/bench_forecast.py --series 20         # fewer public series (quicker)
    python benchmarks/bench_forecast.py --skip-public       # the simulated estate only
    SPENDWATCH_BENCH_DIR=/path/to/bench python benchmarks/bench_forecast.py

For every month with history before it, forecast the month's total at day 3, 10 and 20 with the data
up to that day, then compare with what the month actually came to:

* **simulated estate** — ``--sim-days`` days of the simulated AWS + GCP estate collected into a
  store; scopes: the whole estate, each account/project and each team (its ``team`` tag). The model
  runs through the production path (``budgets.scope_forecasts``: usage modelled, fees and credits as
  known charges); the month's actual is every charge category.
* **public daily series** — ``../shared/bench/public/daily.csv`` (one cost per series and day), as
  monthly totals; everything is usage.

Figures: MAPE and median APE of the month total, for the model and for the naive run-rate (month to
date + mean of the last seven complete days × days left, ``forecast.run_rate_month``); the ratio
naive/model (above 1: the model errs less); and how often the actual month fell inside the model's
80% interval (it should be about 80%). Time per forecast is a ratio to the naive's, same run.
"""

from __future__ import annotations

import argparse
import calendar
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from spendwatch.forecast import MIN_ETS_DAYS, MonthForecast, forecast_month, run_rate_month
from spendwatch.store import Store

REPO = Path(__file__).resolve().parents[1]
DAYS_OF_MONTH = (3, 10, 20)


def bench_dir() -> Path:
    configured = os.environ.get("SPENDWATCH_BENCH_DIR")
    return Path(configured) if configured else REPO.parent / "shared" / "bench"


@dataclass
class Tally:
    """Errors of one data set at one day of the month."""

    model: list[float] = field(default_factory=list)
    naive: list[float] = field(default_factory=list)
    inside: list[bool] = field(default_factory=list)
    model_seconds: float = 0.0
    naive_seconds: float = 0.0
    rows: list[dict[str, object]] = field(default_factory=list)

    def add(self, actual: float, found: MonthForecast, naive: float, name: str = "") -> None:
        if actual <= 0:
            return  # a month that cost nothing has no percentage error
        self.model.append(abs(found.forecast - actual) / actual)
        self.naive.append(abs(naive - actual) / actual)
        self.inside.append(found.lower <= actual <= found.upper)
        self.rows.append(
            {"series": name, "as_of": found.as_of, "actual": actual, "forecast": found.forecast, "lower": found.lower,
             "upper": found.upper, "naive": naive, "method": found.method}
        )  # fmt: skip

    def row(self, name: str, day: int) -> str:
        model, naive = np.array(self.model), np.array(self.naive)
        ratio = naive.mean() / model.mean() if model.mean() > 0 else float("inf")
        speed = self.model_seconds / self.naive_seconds if self.naive_seconds > 0 else float("nan")
        return (
            f"| {name} | {day} | {len(model)} | {model.mean():.1%} | {naive.mean():.1%} | {ratio:.2f}x | "
            f"{np.median(model):.1%} | {np.median(naive):.1%} | {np.mean(self.inside):.0%} | {speed:,.0f}x |"
        )


HEADER = (
    "| data | day | months | MAPE model | MAPE naive | naive/model | median APE model | median APE naive "
    "| in 80% interval | time model/naive |\n|---|---|---|---|---|---|---|---|---|---|"
)


def month_starts(first: date, last: date) -> Iterable[date]:
    """Months whose first day is on or after ``first`` and whose last day is on or before ``last``."""
    month = first.replace(day=1) if first.day == 1 else (first.replace(day=28) + timedelta(days=4)).replace(day=1)
    while month.replace(day=calendar.monthrange(month.year, month.month)[1]) <= last:
        yield month
        month = (month.replace(day=28) + timedelta(days=4)).replace(day=1)


# -- the public daily series ---------------------------------------------------------------------------


def public_backtest(path: Path, series_count: int, seed: int) -> dict[int, Tally]:
    frame = pd.read_csv(path, parse_dates=["timestamp"])
    ids = sorted(frame["series_id"].unique())
    chosen = sorted(np.random.default_rng(seed).choice(ids, min(series_count, len(ids)), replace=False))
    tallies = {day: Tally() for day in DAYS_OF_MONTH}
    for series_id in chosen:
        rows = frame[frame["series_id"] == series_id]
        series = pd.Series(rows["cost"].to_numpy(float), index=pd.DatetimeIndex(rows["timestamp"])).asfreq(
            "D", fill_value=0.0
        )
        first, last = series.index[0].date(), series.index[-1].date()
        for month in month_starts(first + timedelta(days=MIN_ETS_DAYS), last):
            end = month.replace(day=calendar.monthrange(month.year, month.month)[1])
            actual = float(series[pd.Timestamp(month) : pd.Timestamp(end)].sum())
            for day in DAYS_OF_MONTH:
                as_of = month.replace(day=day)
                started = time.perf_counter()
                found = forecast_month(series, as_of, currency="USD")
                between = time.perf_counter()
                naive = run_rate_month(series, as_of)
                tallies[day].model_seconds += between - started
                tallies[day].naive_seconds += time.perf_counter() - between
                tallies[day].add(actual, found, naive, str(series_id))
        print(f"  public {series_id}: done", file=sys.stderr)
    return tallies


# -- the simulated estate ------------------------------------------------------------------------------


def simulated_store(folder: Path, days: int, end: datetime) -> Store:
    from spendwatch.clock import SystemClock
    from spendwatch.collect import collect_source
    from spendwatch.collectors.simulated import SimulatedSourceConfig

    class Fixed(SystemClock):
        def now(self) -> datetime:
            return end

    source = SimulatedSourceConfig(name="estate", type="simulated", seed=7, days=days, end=end)
    store = Store(folder / "bench.duckdb", clock=Fixed())
    run = collect_source(source, store, Fixed())
    if run.error:
        raise SystemExit(f"the simulated source failed: {run.error}")
    print(f"  simulated estate: {run.cost_rows:,} cost lines over {days} days", file=sys.stderr)
    return store


SCOPES = {
    "estate": "'estate'",
    "account": "coalesce(sub_account_id, '?')",
    "team": "coalesce(nullif(trim(tags['team']), ''), 'untagged')",
}


def simulated_backtest(days: int) -> dict[int, Tally]:
    from spendwatch.forecast import daily_series
    from spendwatch.notify.budgets import scope_forecasts

    end = datetime(2026, 11, 30, 12, tzinfo=UTC)
    tallies = {day: Tally() for day in DAYS_OF_MONTH}
    with tempfile.TemporaryDirectory() as folder:
        store = simulated_store(Path(folder), days, end)
        first = (end - timedelta(days=days - 1)).date()
        usage: dict[tuple[str, str], dict[date, float]] = defaultdict(dict)
        other: dict[tuple[str, str], dict[date, float]] = defaultdict(lambda: defaultdict(float))
        for scope, expression in SCOPES.items():
            rows = store.query(
                f"SELECT {expression}, CAST(date_trunc('day', charge_period_start) AS DATE), "
                "charge_category = 'Usage', sum(effective_cost) FROM cost_lines GROUP BY ALL"
            )
            for value, day, is_usage, cost in rows:
                if is_usage:
                    usage[(scope, str(value))][day] = float(cost)
                else:
                    other[(scope, str(value))][day] += float(cost)
        for month in month_starts(first + timedelta(days=MIN_ETS_DAYS), end.date() - timedelta(days=1)):
            last = month.replace(day=calendar.monthrange(month.year, month.month)[1])
            for day in DAYS_OF_MONTH:
                as_of = month.replace(day=day)
                for scope, expression in SCOPES.items():
                    started = time.perf_counter()
                    found = scope_forecasts(store, "TRUE", [], as_of, group=(expression, []))
                    tallies[day].model_seconds += time.perf_counter() - started
                    for (value, _currency), forecast in found.items():
                        key = (scope, str(value))
                        series = daily_series(usage[key], first, last)
                        charges = other.get(key, {})
                        actual = float(series[pd.Timestamp(month) :].sum()) + sum(
                            v for d, v in charges.items() if month <= d <= last
                        )
                        spent = sum(v for d, v in charges.items() if month <= d <= as_of)
                        started = time.perf_counter()
                        naive = run_rate_month(series, as_of, other_to_date=spent)
                        tallies[day].naive_seconds += time.perf_counter() - started
                        tallies[day].add(actual, forecast, naive, f"{scope}:{value}")
            print(f"  simulated {month:%Y-%m}: done", file=sys.stderr)
    return tallies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=24, help="public series sampled (of 300)")
    parser.add_argument("--seed", type=int, default=0, help="which public series are sampled")
    parser.add_argument("--sim-days", type=int, default=300, help="days of the simulated estate")
    parser.add_argument("--skip-public", action="store_true")
    parser.add_argument("--skip-simulated", action="store_true")
    parser.add_argument("--rows", type=Path, help="also write every forecast and its actual to this CSV")
    args = parser.parse_args()
    every: list[dict[str, object]] = []

    lines = [HEADER]
    if not args.skip_simulated:
        for day, tally in simulated_backtest(args.sim_days).items():
            lines.append(tally.row(f"simulated estate ({args.sim_days} d; estate, accounts, teams)", day))
            every += [{"data": "simulated", "day": day, **row} for row in tally.rows]
    if not args.skip_public:
        path = bench_dir() / "public" / "daily.csv"
        if not path.exists():
            print(f"skipping the public series: {path} is absent", file=sys.stderr)
        else:
            for day, tally in public_backtest(path, args.series, args.seed).items():
                lines.append(tally.row(f"public daily.csv ({args.series} series)", day))
                every += [{"data": "public", "day": day, **row} for row in tally.rows]
    print("\n".join(lines))
    if args.rows is not None:
        pd.DataFrame(every).to_csv(args.rows, index=False)


if __name__ == "__main__":
    main()
