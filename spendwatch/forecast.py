"""Month-end forecasts: a seasonal model of daily usage, plus known charges, with an 80% interval.

``forecast_month`` answers "where will this month end?" for one scope (the estate, a team, a budget)
in one currency:

* **usage** (the daily, weekly-seasonal part of a bill) is modelled with statsmodels' ETS
  (``ETSModel``: additive error, damped additive trend, additive weekly seasonality) fitted on the
  last ``FIT_DAYS`` complete days, after a Hampel filter replaced one-day outliers by the local
  level and the weekday's offset (a one-day runaway query is an incident, not a new run-rate; two
  days the same way are a change of level and stay). The
  series is divided by its mean before fitting (the optimiser converges in fewer steps on numbers
  near 1; the forecast is scaled back) and the initial states are set heuristically rather than
  estimated; one fit per scope and day.
  The 80% interval is analytic: the month's remaining days are *summed*, and for this linear model
  the error of a sum of forecasts is a known combination of the future innovations — with
  ``c_j = α + β(φ + … + φ^j) + γ·[j mod 7 = 0]``, the sum over ``H`` days has variance
  ``σ² Σ_{t=1..H} (1 + c_1 + … + c_{H-t})²`` (Hyndman et al., *Forecasting with Exponential
  Smoothing*, ch. 6), plus ``horizon²`` times the uncertainty of today's level (``level_variance``:
  the model's formula takes the fitted level as known, and every remaining day inherits its error),
  and never narrower than the bill's own week-to-week wobble (``weekly_spread``) — the model is fitted
  to a cleaned, smooth series and would otherwise promise more than the bill keeps (backtest:
  ``benchmarks/bench_forecast.py``).
  Per-day intervals cannot be added up; simulating paths gives the first part with sampling noise,
  at a cost. With fewer than ``MIN_ETS_DAYS`` days of history, when a fit fails, or when the fit's
  rest of the month is more than ``IMPLAUSIBLE`` times last week's rate either way (a trend
  extrapolated from a jump), it falls back to the run-rate of the cleaned series with a spread from
  the day-to-day variation.
* **known charges** — fees, purchases, taxes and credits are not extrapolated from the daily rhythm
  (a $20k support fee on the 1st is not a run-rate). What already happened is in the month to date;
  what is still to come is taken from last month's charges after the same day of the month (the
  monthly fee, the month-end tax), added as a known amount.

``run_rate_month`` is the naive baseline the benchmark compares against: month to date plus the
mean of the last seven complete days (crossing into last month when the month is young) times the
days left. (The first digest's run-rate divided the days since the 1st by seven: 3× too low on the 2nd.)

``benchmarks/bench_forecast.py`` backtests both at day 3, 10 and 20 of every month.
"""

from __future__ import annotations

import calendar
import warnings
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache

import numpy as np
import pandas as pd

FIT_DAYS = 70
MIN_ETS_DAYS = 28
Z_80 = 1.2816  # the standard normal's 90th percentile: a central 80% interval
RUN_RATE_DAYS = 7
SEASON = 7
# A model forecast of the rest of the month this many times above (or below) last week's rate is
# not believed: the run-rate of the cleaned series is used instead.
IMPLAUSIBLE = 3.0
HAMPEL_WINDOW = 15  # days in the rolling median of the outlier filter
OUTLIER_SCALES = 5.0  # a day this many robust standard deviations off its local level is an outlier


@dataclass(frozen=True)
class MonthForecast:
    """Where one scope's month ends, in its currency."""

    currency: str
    month_start: date
    as_of: date
    days_in_month: int
    to_date: float
    known_charges: float
    forecast: float
    lower: float
    upper: float
    method: str  # ets | run-rate | complete

    @property
    def days_covered(self) -> int:
        return (self.as_of - self.month_start).days + 1

    @property
    def month(self) -> str:
        return self.month_start.strftime("%B %Y")


def month_bounds(day: date) -> tuple[date, date]:
    """(first day, last day) of ``day``'s month."""
    last = calendar.monthrange(day.year, day.month)[1]
    return day.replace(day=1), day.replace(day=last)


def daily_series(values: dict[date, float], start: date, end: date) -> pd.Series:
    """A gap-free daily series from ``start`` to ``end`` (a day without cost lines cost nothing)."""
    index = pd.date_range(start, end, freq="D")
    return pd.Series([float(values.get(d.date(), 0.0)) for d in index], index=index, dtype=float)


def run_rate_month(usage: pd.Series, as_of: date, *, other_to_date: float = 0.0) -> float:
    """The naive forecast: month to date + mean of the last seven complete days × days left."""
    first, last = month_bounds(as_of)
    history = usage[: pd.Timestamp(as_of)]
    to_date = float(history[pd.Timestamp(first) :].sum()) + other_to_date
    recent = history.iloc[-RUN_RATE_DAYS:]
    rate = float(recent.mean()) if len(recent) else 0.0
    return to_date + rate * (last - as_of).days


def forecast_month(
    usage: pd.Series,
    as_of: date,
    *,
    currency: str,
    other_to_date: float = 0.0,
    known_charges: float = 0.0,
) -> MonthForecast:
    """Forecast ``as_of``'s month from daily ``usage`` up to and including ``as_of``.

    ``other_to_date``: this month's fees, credits and taxes so far; ``known_charges``: those still to
    come this month.
    """
    first, last = month_bounds(as_of)
    history = usage[: pd.Timestamp(as_of)].astype(float)
    usage_to_date = float(history[pd.Timestamp(first) :].sum())
    to_date = usage_to_date + other_to_date
    horizon = (last - as_of).days

    def result(point: float, low: float, high: float, method: str) -> MonthForecast:
        base = to_date + known_charges
        return MonthForecast(
            currency, first, as_of, last.day, to_date, known_charges,
            base + point, base + min(low, point), base + max(high, point), method,
        )  # fmt: skip

    if horizon <= 0:
        return result(0.0, 0.0, 0.0, "complete")
    history = history[_first_nonzero(history) :]
    if len(history) >= MIN_ETS_DAYS:
        window = history.iloc[-FIT_DAYS:]
        fitted = _ets_cached(tuple(window.to_numpy().tolist()), window.index[0].date(), horizon)
        if fitted is not None:
            return result(*fitted, "ets")
    if len(history) >= 3 * SEASON:
        history = _without_outliers(history.asfreq("D"))  # a runaway day is not a run-rate either
    return result(*_run_rate_interval(history, horizon), "run-rate")


@lru_cache(maxsize=512)
def _ets_cached(values: tuple[float, ...], start: date, horizon: int) -> tuple[float, float, float] | None:
    """One fit per series and horizon: the FinOps digest, each team's digest, the budgets and the alert
    pass often forecast the very same lines (a team's budget is its table row); the fit is a pure
    function of the numbers, so the same numbers are fitted once per process."""
    index = pd.date_range(start, periods=len(values), freq="D")
    return _ets(pd.Series(values, index=index, dtype=float), horizon)


def _first_nonzero(series: pd.Series) -> int:
    nonzero = np.flatnonzero(series.to_numpy() != 0.0)
    return int(nonzero[0]) if len(nonzero) else len(series)


def _ets(history: pd.Series, horizon: int) -> tuple[float, float, float] | None:
    """(point, lower, upper) of the next ``horizon`` days' sum, or ``None`` when the fit fails."""
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    y = _without_outliers(history.asfreq("D"))
    scale = float(np.abs(y).mean())
    if float(y.std()) == 0.0 or scale == 0.0:
        level = float(y.iloc[-1])
        return level * horizon, level * horizon, level * horizon
    try:
        with warnings.catch_warnings():
            # Convergence chatter on short or flat series; a failed fit falls back to the run-rate.
            warnings.simplefilter("ignore")
            # Heuristic initial states (Hyndman et al.: from the first seasons) instead of estimating
            # nine more parameters: ~4x fewer optimiser steps, the same forecasts within noise.
            model = ETSModel(
                y / scale,
                error="add",
                trend="add",
                damped_trend=True,
                seasonal="add",
                seasonal_periods=SEASON,
                initialization_method="heuristic",
            )
            fit = model.fit(disp=False, maxiter=200)
            point = float(np.clip(fit.forecast(horizon).to_numpy(), 0.0, None).sum()) * scale
            recent = float(y.iloc[-RUN_RATE_DAYS:].mean()) * horizon
            if recent > 0 and not recent / IMPLAUSIBLE < point < recent * IMPLAUSIBLE:
                # A trend extrapolated from a jump in the last days: a model failure, not a forecast.
                return None
            params = (fit.smoothing_level, fit.smoothing_trend, fit.smoothing_seasonal, fit.damping_trend)
            variance = sum_variance(*params, horizon=horizon) + horizon**2 * level_variance(fit.smoothing_level, len(y))
            # Never narrower than the week-to-week wobble of the bill itself (spikes included), which a
            # model fitted to a cleaned, smooth series underrates: 60% → 80% coverage on the public set.
            spread = Z_80 * max(scale * float(np.sqrt(fit.mse * variance)), weekly_spread(history, horizon))
    except (ValueError, np.linalg.LinAlgError):
        return None
    if not (np.isfinite(point) and np.isfinite(spread)):
        return None
    return point, max(0.0, point - spread), point + spread


def weekly_spread(history: pd.Series, horizon: int) -> float:
    """The standard deviation of ``horizon`` days' sum if each week of it moved as the last weeks' did:
    the spread of week-to-week changes of weekly totals (÷√2: a change has two weeks' noise), over
    ``horizon/7`` independent weeks. Zero with fewer than three whole weeks."""
    weeks = len(history) // SEASON
    if weeks < 3:
        return 0.0
    totals = history.iloc[len(history) - weeks * SEASON :].to_numpy(dtype=float).reshape(weeks, SEASON).sum(axis=1)
    return float(np.std(np.diff(totals), ddof=1) / np.sqrt(2.0) * np.sqrt(horizon / SEASON))


def level_variance(alpha: float, days: int) -> float:
    """How far today's estimated level may be from the true one, in units of σ²: the steady-state
    variance of exponential smoothing's level, ``α/(2−α)``, and no less than that of a plain mean of
    the window (``1/days``, when the fit all but freezes the level). Every remaining day of the month
    inherits that error, so it enters the month's sum ``horizon²`` times: the part of the interval the
    model's own formula leaves out (it takes the fitted level as known)."""
    return max(alpha / (2.0 - alpha), 1.0 / max(days, 1))


def sum_variance(alpha: float, beta: float, gamma: float, phi: float, *, horizon: int, season: int = SEASON) -> float:
    """The variance, in units of σ², of the error of the sum of the next ``horizon`` one-day forecasts
    of an additive-error, damped-additive-trend, additive-seasonal ETS model (see the module docstring)."""
    j = np.arange(1, horizon)
    damped = np.cumsum(phi**j) if len(j) else np.zeros(0)
    c = alpha + beta * damped + gamma * (j % season == 0)
    # The innovation of day t weighs on itself and on every later day of the sum: 1 + c_1 + … + c_{H-t}.
    weights = 1.0 + np.concatenate(([0.0], np.cumsum(c)))
    return float(np.sum(weights**2))


def _without_outliers(y: pd.Series) -> pd.Series:
    """One-day outliers — a runaway query, a day the bill lost — become the local level plus the
    weekday's usual offset (a Hampel filter on the weekly-adjusted series): a spike is an incident,
    not a new run-rate. Two or more days off the same way are a change of level and stay: a forgotten
    GPU job running for two days is what the rest of the month will look like until someone stops it.

    (Robust STL's own weights were tried first: on smooth bills it zero-weights most days and, near
    the series' end, lets a spike pull the trend it then fills in with — 40% high three days after a
    runaway query.)"""
    weekday = pd.DatetimeIndex(y.index).day_of_week
    season = (y - y.rolling(HAMPEL_WINDOW, center=True, min_periods=4).median()).groupby(weekday).median()
    offset = season.reindex(weekday).to_numpy()
    local = (y - offset).rolling(HAMPEL_WINDOW, center=True, min_periods=4).median()
    resid = (y - offset - local).to_numpy()
    spread = 1.4826 * float(np.median(np.abs(resid - np.median(resid))))
    scale = max(spread, 0.01 * float(np.median(np.abs(y.to_numpy()))), 1e-9)
    sign = np.sign(resid) * (np.abs(resid) > OUTLIER_SCALES * scale)
    replaced = (local + offset).to_numpy(dtype=float, copy=True)
    keep = np.ones(len(y), dtype=bool)
    adjusted = (y - offset).to_numpy(dtype=float)
    start = 0
    while start < len(sign):
        end = start
        while end + 1 < len(sign) and sign[end + 1] == sign[start]:
            end += 1
        if sign[start] != 0:
            if end == start:
                keep[start] = False  # one day off: an outlier
            else:
                # Days off the same way are a new level — but a spike on top of it (the runaway query on
                # the third day of a forgotten GPU job) is still a spike, measured against that level.
                level = float(np.median(adjusted[start : end + 1]))
                for day in range(start, end + 1):
                    if abs(adjusted[day] - level) > OUTLIER_SCALES * scale:
                        keep[day] = False
                        replaced[day] = level + offset[day]
        start = end + 1
    return y.where(keep, pd.Series(replaced, index=y.index))


def _run_rate_interval(history: pd.Series, horizon: int) -> tuple[float, float, float]:
    recent = history.iloc[-RUN_RATE_DAYS:]
    if recent.empty:
        return 0.0, 0.0, 0.0
    rate = float(recent.mean())
    # Independent days: the spread of a sum of ``horizon`` days grows with its square root.
    spread = Z_80 * float(recent.std(ddof=1) if len(recent) > 1 else rate * 0.25) * np.sqrt(horizon)
    point = rate * horizon
    return point, max(0.0, point - spread), point + spread


def known_future_charges(last_month: dict[date, float], as_of: date) -> float:
    """Last month's fees, taxes and credits dated after ``as_of``'s day of the month: they recur."""
    first, _ = month_bounds(as_of)
    previous_first, previous_last = month_bounds(first - timedelta(days=1))
    cutoff = min(as_of.day, previous_last.day)
    return float(sum(v for d, v in last_month.items() if previous_first <= d <= previous_last and d.day > cutoff))
