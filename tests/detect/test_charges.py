"""Earlier calendar slots judged in hindsight: a charge is one day that stands out of its weeks."""

from __future__ import annotations

import numpy as np

from spendwatch.detect.charges import MIN_NEIGHBOURS, in_hindsight
from spendwatch.detect.model import ModelParams

LIMITS = ModelParams.for_granularity("daily").thresholds()
SLOT = 60  # the earlier occurrence judged
DECIDED = np.array([120])  # the column deciding: only columns before it may be read


def weekly(n: int = 160, noise: float = 0.03, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pattern = np.array([1.0, 1.02, 1.05, 1.03, 0.98, 0.6, 0.55])
    return 1000.0 * pattern[np.arange(n) % 7] * np.exp(noise * rng.standard_normal(n))


def judge(values: np.ndarray, slot: int = SLOT, decided: np.ndarray = DECIDED) -> tuple[bool, bool, float]:
    lags = np.array([[slot]])
    past = in_hindsight(values[None, :], lags, decided, LIMITS)
    return bool(past.judged[0, 0, 0]), bool(past.charged[0, 0, 0]), float(past.excess[0, 0, 0])


def test_a_one_day_charge_stands_out_of_the_same_weekday_around_it() -> None:
    values = weekly()
    values[SLOT] += 5000.0
    judged, charged, excess = judge(values)
    assert judged and charged
    assert 4800.0 < excess < 5200.0  # over the neighbours' median, not over a one-sided forecast


def test_an_ordinary_day_is_evidence_of_no_charge() -> None:
    assert judge(weekly())[:2] == (True, False)


def test_a_rise_over_several_days_is_usage_not_a_charge() -> None:
    values = weekly()
    values[SLOT - 1 : SLOT + 2] += 5000.0  # a busy few days: the days either side stand out too
    judged, charged, _ = judge(values)
    assert judged and not charged


def test_a_charge_on_the_first_day_of_the_data_is_judged_from_the_weeks_after_it() -> None:
    values = weekly()
    values[0] += 5000.0
    assert judge(values, slot=0)[:2] == (True, True)


def test_a_noisy_series_needs_a_bigger_charge() -> None:
    values = weekly(noise=0.4, seed=3)
    values[SLOT] *= 1.8  # +80%: material, but inside three sigmas of the weeks' spread
    assert judge(values)[:2] == (True, False)
    values[SLOT] *= 10
    assert judge(values)[:2] == (True, True)


def test_a_day_with_too_few_running_neighbours_is_no_evidence() -> None:
    values = weekly()
    values[SLOT] += 5000.0
    around = SLOT + 7 * np.array([-4, -3, -2, -1, 1, 2, 3, 4])
    values[around[MIN_NEIGHBOURS - 1 :]] = 0.0  # a job idle on all but MIN_NEIGHBOURS - 1 of those days
    assert judge(values)[:2] == (False, False)


def test_only_columns_before_the_decided_one_are_read() -> None:
    values = weekly()
    values[SLOT] += 5000.0
    decided = np.array([SLOT + 15])  # two of the later neighbours and the day after lie before it
    before = judge(values, decided=decided)
    changed = values.copy()
    changed[decided[0] :] = np.where(np.arange(len(values) - decided[0]) % 2, 0.0, 1e9)
    assert judge(changed, decided=decided) == before
    assert before[:2] == (True, True)
