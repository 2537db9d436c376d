"""The month-end forecast: seasonal ETS on daily usage, known charges, the analytic 80% interval, fallbacks."""

from __future__ import annotations

import warnings
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

import spendwatch.forecast as forecast_module
from spendwatch.forecast import (
    MIN_ETS_DAYS,
    daily_series,
    forecast_month,
    known_future_charges,
    run_rate_month,
    sum_variance,
)

WEEKLY = np.array([1.0, 1.03, 1.05, 1.02, 0.97, 0.62, 0.58])  # Monday … Sunday


def bill(start: date, days: int, level: float = 20_000.0, noise: float = 0.03, seed: int = 1) -> pd.Series:
    """Daily usage with a weekly rhythm (quiet weekends) and a little noise."""
    rng = np.random.default_rng(seed)
    index = pd.date_range(start, periods=days, freq="D")
    values = [level * WEEKLY[d.weekday()] * float(np.exp(rng.normal(0, noise))) for d in index]
    return pd.Series(values, index=index, dtype=float)


def month_total(series: pd.Series, month_start: date) -> float:
    last = (pd.Timestamp(month_start) + pd.offsets.MonthEnd(0)).date()
    return float(series[pd.Timestamp(month_start) : pd.Timestamp(last)].sum())


@pytest.mark.parametrize("day", [2, 3, 10, 20])
def test_the_forecast_lands_near_the_month_actually_billed_and_its_interval_holds_it(day: int) -> None:
    series = bill(date(2026, 8, 1), 153)  # August … December
    as_of = date(2026, 12, day)
    found = forecast_month(series, as_of, currency="USD")
    truth = month_total(series, date(2026, 12, 1))

    assert found.method == "ets"
    assert found.days_covered == day and found.days_in_month == 31
    assert found.to_date == pytest.approx(float(series[pd.Timestamp(2026, 12, 1) : pd.Timestamp(as_of)].sum()))
    assert found.forecast == pytest.approx(truth, rel=0.03)
    assert found.lower < found.forecast < found.upper


def test_the_interval_narrows_as_the_month_goes_by_and_holds_most_months() -> None:
    inside = 0
    for seed in range(10):
        series = bill(date(2026, 8, 1), 153, noise=0.05, seed=seed)
        truth = month_total(series, date(2026, 12, 1))
        early, late = (forecast_month(series, date(2026, 12, day), currency="USD") for day in (3, 20))
        assert early.upper - early.lower > late.upper - late.lower
        inside += early.lower <= truth <= early.upper
    # An 80% interval; ten fixed series: deterministic, and a loose bound (the benchmark measures it).
    assert inside >= 6


def test_early_in_the_month_the_rate_is_not_divided_by_days_that_did_not_happen() -> None:
    """The first digest's run-rate summed the days since the 1st but divided by seven: on the 2nd it was
    ~3x low. Both the model and the naive baseline use seven whole days, crossing into last month."""
    series = bill(date(2026, 8, 1), 124, noise=0.01)  # up to 2 December
    as_of = date(2026, 12, 2)
    truth_rate = float(series.iloc[-7:].mean())
    expected = float(series.iloc[-2:].sum()) + truth_rate * 29

    assert run_rate_month(series, as_of) == pytest.approx(expected)
    assert forecast_month(series, as_of, currency="USD").forecast == pytest.approx(expected, rel=0.05)
    buggy = float(series.iloc[-2:].sum()) + float(series.iloc[-2:].sum()) / 7 * 29
    assert forecast_month(series, as_of, currency="USD").forecast > 2.5 * buggy


def test_a_one_day_runaway_is_an_incident_not_a_new_run_rate() -> None:
    series = bill(date(2026, 8, 1), 110)
    spiked = series.copy()
    spiked.iloc[-3] += 8 * float(series.mean())  # a runaway query three days ago
    as_of = series.index[-1].date()
    plain = forecast_month(series, as_of, currency="USD")
    with_spike = forecast_month(spiked, as_of, currency="USD")

    extra = float(spiked.iloc[-3] - series.iloc[-3])
    # What it cost is in the month to date; the rest of the month is forecast as if it had not happened.
    assert with_spike.to_date == pytest.approx(plain.to_date + extra)
    assert with_spike.forecast - with_spike.to_date == pytest.approx(plain.forecast - plain.to_date, rel=0.05)


def test_a_shift_that_lasts_moves_the_forecast() -> None:
    series = bill(date(2026, 8, 1), 110)
    shifted = series.copy()
    shifted.iloc[-10:] *= 1.5  # a forgotten GPU job, running for ten days now
    as_of = series.index[-1].date()
    assert (
        forecast_month(shifted, as_of, currency="USD").forecast
        > 1.2 * forecast_month(series, as_of, currency="USD").forecast
    )


def test_short_history_falls_back_to_the_run_rate_with_a_spread() -> None:
    series = bill(date(2026, 11, 20), MIN_ETS_DAYS - 1)
    as_of = series.index[-1].date()
    found = forecast_month(series, as_of, currency="USD")
    rate = float(series.iloc[-7:].mean())
    left = (date(2026, 12, 31) - as_of).days

    assert found.method == "run-rate"
    assert found.forecast == pytest.approx(found.to_date + rate * left)
    assert found.lower < found.forecast < found.upper


def test_a_failed_fit_falls_back_to_the_run_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    def broken(*args: object, **kwargs: object) -> None:
        raise np.linalg.LinAlgError("singular matrix")

    monkeypatch.setattr(ETSModel, "fit", broken)
    forecast_module._ets_cached.cache_clear()
    series = bill(date(2026, 8, 1), 100, seed=99)
    found = forecast_month(series, series.index[-1].date(), currency="USD")
    forecast_module._ets_cached.cache_clear()
    assert found.method == "run-rate"


def test_a_flat_series_is_forecast_exactly_and_a_complete_month_is_what_was_billed() -> None:
    index = pd.date_range(date(2026, 9, 1), periods=70, freq="D")
    flat = pd.Series(100.0, index=index)
    found = forecast_month(flat, date(2026, 11, 5), currency="EUR")
    assert (found.forecast, found.lower, found.upper) == pytest.approx((3000.0, 3000.0, 3000.0))

    complete = forecast_month(flat, date(2026, 10, 31), currency="EUR", other_to_date=50.0)
    assert complete.method == "complete"
    assert complete.forecast == complete.to_date == pytest.approx(3100.0 + 50.0)


def test_fees_and_credits_are_known_charges_not_a_rate() -> None:
    last_month = {date(2026, 10, 1): 20_000.0, date(2026, 10, 15): -500.0, date(2026, 10, 31): 1_200.0}
    assert known_future_charges(last_month, date(2026, 11, 10)) == pytest.approx(-500.0 + 1_200.0)
    # A shorter month: the 31st's tax still falls due (by the 30th).
    assert known_future_charges(last_month, date(2026, 11, 29)) == pytest.approx(1_200.0)
    series = bill(date(2026, 8, 1), 102)
    as_of = series.index[-1].date()
    plain = forecast_month(series, as_of, currency="USD")
    charged = forecast_month(series, as_of, currency="USD", other_to_date=20_000.0, known_charges=700.0)
    assert charged.forecast == pytest.approx(plain.forecast + 20_700.0)
    assert charged.known_charges == 700.0 and charged.to_date == pytest.approx(plain.to_date + 20_000.0)


def test_the_analytic_interval_matches_simulating_the_fitted_model() -> None:
    """The variance of the sum of the month's remaining days, from the model's own parameters, agrees
    with simulating the fitted model (what the first version did, 400 paths at a time)."""
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    y = bill(date(2026, 8, 1), 70, noise=0.06) / 20_000.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = ETSModel(y, error="add", trend="add", damped_trend=True, seasonal="add", seasonal_periods=7).fit(
            disp=False
        )
    params = (fit.smoothing_level, fit.smoothing_trend, fit.smoothing_seasonal, fit.damping_trend)
    for horizon in (1, 9, 28):
        paths = np.asarray(fit.simulate(horizon, repetitions=20_000, anchor="end", rng=np.random.default_rng(3)))
        simulated = float(paths.reshape(horizon, -1).sum(axis=0).std())
        analytic = float(np.sqrt(fit.mse * sum_variance(*params, horizon=horizon)))
        assert analytic == pytest.approx(simulated, rel=0.05)
    assert sum_variance(0.3, 0.0, 0.0, 0.9, horizon=1) == 1.0  # one day: just that day's innovation


def test_the_same_numbers_are_fitted_once() -> None:
    forecast_module._ets_cached.cache_clear()
    series = bill(date(2026, 8, 1), 100, seed=5)
    first = forecast_month(series, date(2026, 11, 8), currency="USD")
    again = forecast_month(series.copy(), date(2026, 11, 8), currency="USD")
    info = forecast_module._ets_cached.cache_info()
    assert first == again
    assert (info.misses, info.hits) == (1, 1)


def test_daily_series_fills_days_without_lines_with_zero() -> None:
    series = daily_series({date(2026, 1, 2): 5.0}, date(2026, 1, 1), date(2026, 1, 4))
    assert series.tolist() == [0.0, 5.0, 0.0, 0.0]
    assert forecast_month(series.iloc[:0], date(2026, 1, 4), currency="USD").forecast == 0.0


def test_a_month_starting_on_a_quiet_day_is_not_extrapolated_from_zeros() -> None:
    """Days before a scope's first cost line are not zero spend (a new team, a new account)."""
    series = bill(date(2026, 10, 1), 60)
    padded = pd.concat([pd.Series(0.0, index=pd.date_range(date(2026, 7, 1), date(2026, 9, 30))), series])
    as_of = series.index[-1].date()
    assert forecast_month(padded, as_of, currency="USD").forecast == pytest.approx(
        forecast_month(series, as_of, currency="USD").forecast
    )


def test_history_after_as_of_is_never_used() -> None:
    series = bill(date(2026, 8, 1), 130)
    later = series.copy()
    later.iloc[-5:] *= 10
    as_of = series.index[-6].date()
    assert forecast_month(later, as_of, currency="USD") == forecast_month(series, as_of, currency="USD")
    assert as_of + timedelta(days=5) == series.index[-1].date()
