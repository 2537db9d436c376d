"""The routine upper tail: one-day bumps a series shows several times a year stop alerting."""

from __future__ import annotations

import numpy as np
import pytest

from spendwatch.detect.model import Detector, ModelParams
from spendwatch.detect.tails import (
    TailSpec,
    charge_slots,
    not_recurring,
    one_day_bumps,
    routine_high,
    same_phase_baseline,
)

DAY = np.timedelta64(1, "D")
N_STEPS = 420
BUMP_DAYS = (100, 160, 215, 270, 330)  # five lone +70% days a year: this series' routine tail
TODAY = 400


def stamps(n_steps: int = N_STEPS) -> np.ndarray:
    return np.datetime64("2025-01-01", "D") + np.arange(n_steps) * DAY


def quiet_series(seed: int = 0, noise: float = 0.03) -> np.ndarray:
    rng = np.random.default_rng(seed)
    season = np.where(np.arange(N_STEPS) % 7 >= 5, 0.7, 1.0)
    return 5000.0 * season * np.exp(noise * rng.standard_normal(N_STEPS))


def heavy_tailed(seed: int = 0) -> np.ndarray:
    values = quiet_series(seed)
    values[list(BUMP_DAYS)] *= 1.7
    return values


def flags_at(values: np.ndarray, day: int, **overrides: float | int) -> bool:
    result = Detector(ModelParams.for_granularity("daily", **overrides)).fit(values[None, :], stamps())
    return bool(result.is_anomaly[0, day])


def test_a_bump_the_series_shows_several_times_a_year_does_not_alert() -> None:
    values = heavy_tailed()
    values[TODAY] *= 1.6
    assert flags_at(values, TODAY, tail_count=0), "without the rule the 8-week window alerts on it"
    assert not flags_at(values, TODAY)


def test_a_spike_bigger_than_the_routine_bumps_still_alerts() -> None:
    values = heavy_tailed()
    values[TODAY] *= 3.0
    assert flags_at(values, TODAY)


def test_a_thin_tailed_series_keeps_the_window_rule() -> None:
    values = quiet_series()
    values[[100, 215]] *= 1.7  # two bumps a year: fewer than tail_count (3), could be incidents
    values[TODAY] *= 1.6
    assert flags_at(values, TODAY)


def test_a_monthly_charge_does_not_count_as_a_routine_bump() -> None:
    values = quiet_series()
    days = stamps().astype("datetime64[D]")
    fifteenth = np.flatnonzero((days - days.astype("datetime64[M]").astype("datetime64[D]")).astype(int) == 14)
    values[fifteenth[fifteenth < TODAY - 5]] *= 2.5  # a charge on the 15th, a dozen times a year
    logs = np.log(values)[None, :]
    raw = one_day_bumps(logs, same_phase_baseline(logs, TailSpec()))
    kept = not_recurring(raw, charge_slots(stamps()))
    charge_days = fifteenth[(fifteenth < TODAY - 5) & ~np.isnan(raw[0, fifteenth])]
    assert (raw[0, charge_days] > 0.5).sum() >= 10
    assert (kept[0, charge_days] > 0.5).sum() == 1, "only the first occurrence is a bump"
    spiky = values.copy()
    spiky[TODAY] *= 1.8  # not a charge day
    assert flags_at(spiky, TODAY)


def test_a_level_shift_is_not_a_bump() -> None:
    values = quiet_series()
    values[200:260] *= 1.7
    logs = np.log(values)[None, :]
    bumps = one_day_bumps(logs, same_phase_baseline(logs, TailSpec()))
    assert np.nanmax(bumps[0, 200:259]) < 0.2, "even its first day: the next day is as high"
    lone = values.copy()
    lone[300] *= 1.7
    logs = np.log(lone)[None, :]
    assert one_day_bumps(logs, same_phase_baseline(logs, TailSpec()))[0, 300] > 0.4


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_bound_reads_no_column_after_the_decided_one(seed: int) -> None:
    values = heavy_tailed(seed)[None, :]
    values[0, np.random.default_rng(seed).random(N_STEPS) < 0.05] = np.nan
    decided = np.arange(150, N_STEPS, dtype=np.int64)
    full = routine_high(values, stamps(), decided, TailSpec())
    assert np.isfinite(full).any()
    for t in (150, 161, 216, 331, 399, N_STEPS - 1):
        cut = routine_high(values[:, : t + 1], stamps(t + 1), np.array([t], dtype=np.int64), TailSpec())
        np.testing.assert_array_equal(cut[:, 0], full[:, t - 150])


def test_detector_decisions_are_identical_when_later_columns_are_truncated() -> None:
    values = heavy_tailed()
    values[TODAY] *= 1.6
    detector = Detector(ModelParams.for_granularity("daily"))
    full = detector.fit(values[None, :], stamps(), decide_from=300)
    for t in (331, TODAY, N_STEPS - 1):
        cut = detector.fit(values[None, : t + 1], stamps(t + 1), decide_from=t)
        np.testing.assert_array_equal(cut.is_anomaly[:, 0], full.is_anomaly[:, t - 300])
        np.testing.assert_array_equal(cut.upper[:, 0], full.upper[:, t - 300])


def test_the_rule_is_off_for_hourly_data_and_knobs_are_checked() -> None:
    assert ModelParams.for_granularity("hourly").tail_spec().count == 0
    assert ModelParams.for_granularity("daily").tail_spec().count == 3
    with pytest.raises(ValueError, match="tail_days"):
        ModelParams.for_granularity("daily", tail_days=0)


@pytest.mark.parametrize("lags", [3, 4, 5])  # 4 (the default) takes the sorting network, others a sort
def test_the_sorting_network_baseline_is_the_median_of_the_running_lags(lags: int) -> None:
    rng = np.random.default_rng(3)
    logs = rng.standard_normal((40, 120))
    logs[rng.random(logs.shape) < 0.2] = np.nan
    spec = TailSpec(lags=lags)
    got = same_phase_baseline(logs, spec)
    assert np.isnan(got).any() and not np.isnan(got).all()
    for t in range(120):
        lagged = [logs[:, t - k * 7] if t - k * 7 >= 0 else np.full(40, np.nan) for k in range(1, lags + 1)]
        stacked = np.stack(lagged, axis=1)
        enough = np.count_nonzero(~np.isnan(stacked), axis=1) >= lags - 1
        want = np.full(40, np.nan)
        want[enough] = np.nanmedian(stacked[enough], axis=1)
        np.testing.assert_allclose(got[:, t], want)
