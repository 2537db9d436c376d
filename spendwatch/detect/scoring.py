"""Turns a robust forecast into decisions: robust z, the materiality gate and the kind.

Scores are in log dollars (noise of a cost series grows with its level, so a relative
error is what is comparable across hours of the day and across accounts); the materiality
gate is in dollars.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spendwatch.detect.kinds import Kind
from spendwatch.detect.robust import BoolArray, FloatArray, nanmedian_last
from spendwatch.detect.seasonal import Forecast
from spendwatch.detect.sustained import SustainedLimits, filled_up, sustained_excess

RECURRING_LOG_SCALE = 0.1
"""A learnt monthly charge is trusted to about +-10%: its ratio is an estimate from 1-3 samples."""

LEAK_BLOCKS = 3
"""A leak is a level that rose from block to block, twice in a row: a shift rises only once."""

_TINY = 1e-9


@dataclass(frozen=True)
class Thresholds:
    z: float
    spread_z: float  # spread sigmas an intermittent job's step must exceed to be a spike
    sustained_z: float
    leak_step_z: float
    min_abs: float
    min_pct: float
    scale_floor_pct: float
    intermittent_zero_share: float
    hourly: bool
    sustained: SustainedLimits
    history_cut: bool = False  # the panel starts after the data does (ModelParams.history_cut)


@dataclass(frozen=True)
class Decision:
    expected: FloatArray
    lower: FloatArray
    upper: FloatArray
    score: FloatArray
    log_ratio: FloatArray  # log(observed / expected), NaN where undecided or not positive
    excess: FloatArray  # observed - expected in dollars
    is_anomaly: BoolArray
    is_drop: BoolArray
    kind: np.ndarray
    decided: BoolArray  # the model could decide the step (enough history, value observed)


def decide(
    observed: FloatArray,
    base: Forecast,
    recurring: FloatArray,
    limits: Thresholds,
    routine_high: FloatArray | None = None,
) -> Decision:
    """Alert where a step is both statistically surprising and material in dollars.

    ``observed`` holds the decided columns' values, aligned with ``base``; ``recurring`` is the
    log ratio a learnt day-of-month charge adds on top of the seasonal expectation (0 if none);
    ``routine_high`` (optional, NaN = none) the highest cost the series' own one-day bumps of the
    last year make routine (:mod:`spendwatch.detect.tails`): a spike must also exceed it.
    """
    expected = np.exp(base.log_expected + recurring)
    expected_long = np.exp(base.log_expected_long + recurring)
    scale = _effective_scale(base.log_scale, recurring, limits.scale_floor_pct)
    usable = base.decidable & ~np.isnan(observed)
    positive = usable & (observed > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        score = np.where(positive, (np.log(observed) - np.log(expected)) / scale, np.nan)
        upper = np.fmax(
            _upper_bound(expected, expected_long, _spike_scale(scale, base, limits), limits),
            np.exp(base.log_usual_high + recurring),
        )
        if routine_high is not None:
            upper = np.fmax(upper, routine_high)
        spike = positive & (observed > upper)
        leak = positive & _rising_level(observed, expected_long, base, scale, limits)
        sustained_scale = np.fmax(scale, base.sustained.spread)
        # Every series, intermittent jobs included: an idle step is not a cost and adds nothing to
        # the sums, so the test reads a job's running costs. A job's runs come in bursts of alike
        # days, so there its steps' own correlation widens the sums' variance; on other series the
        # 28-day reference reads a trend as correlation and would blunt the test (docs/detection.md).
        intermittent = base.zero_share > limits.intermittent_zero_share
        bursts = np.where(intermittent, base.sustained.autocorrelation, 0.0)
        told = sustained_excess(observed, base.sustained, recurring, sustained_scale, limits.sustained, bursts)
        sustained = positive & (
            told.alarm | filled_up(observed, base.sustained, limits.sustained, limits.intermittent_zero_share)
        )
        is_anomaly = spike | leak | sustained
        lower = np.minimum(expected * np.exp(-limits.z * scale), expected - _material(expected, limits))
        idle = (observed <= 0) & (base.zero_share > limits.intermittent_zero_share)
        is_drop = usable & ~is_anomaly & (observed < lower) & ~idle
    kind = _kind(spike, leak, sustained, is_drop, base, scale, limits)
    log_ratio = score * scale
    return Decision(expected, lower, upper, score, log_ratio, observed - expected, is_anomaly, is_drop, kind, usable)


def _effective_scale(log_scale: FloatArray, recurring: FloatArray, floor_pct: float) -> FloatArray:
    floors = np.where(recurring > 0, max(floor_pct, RECURRING_LOG_SCALE), floor_pct)
    return np.fmax(np.fmax(log_scale, floors), _TINY)


def _spike_scale(scale: FloatArray, base: Forecast, limits: Thresholds) -> FloatArray:
    """The noise a one-step spike is measured against (``z`` of it must be exceeded).

    An intermittent job's forecast is the median of running steps days apart, and the runs of one
    burst are alike, so successive changes understate how far its next run may land from that
    median: there the step must also be ``spread_z`` sigmas of its running costs' spread around
    their median (3 sigmas: about one run in 700 on Gaussian noise). Only for the spike rule: a
    leak or a sustained excess is measured against the level, where the successive-change sigma
    is the right one."""
    intermittent = base.zero_share > limits.intermittent_zero_share
    return np.where(
        intermittent, np.fmax(scale, limits.spread_z / limits.z * np.nan_to_num(base.log_spread, nan=0.0)), scale
    )


def _material(expected: FloatArray, limits: Thresholds) -> FloatArray:
    return np.maximum(limits.min_abs, limits.min_pct * np.maximum(expected, 0.0))


def _upper_bound(expected: FloatArray, expected_long: FloatArray, scale: FloatArray, limits: Thresholds) -> FloatArray:
    """Lowest value that alerts: above the short AND the long expectation, by z and by $.

    The long expectation stops "back to normal after a holiday dip" from alerting; the short
    one lets a level shift become the new normal within ``level_points / 2`` steps.
    """
    factor = np.exp(limits.z * scale)
    short = np.maximum(expected * factor, expected + _material(expected, limits))
    long = np.maximum(expected_long * factor, expected_long + _material(expected_long, limits))
    return np.fmax(short, long)


def _rising_level(
    observed: FloatArray, expected_long: FloatArray, base: Forecast, scale: FloatArray, limits: Thresholds
) -> BoolArray:
    """A leak: the level rose block after block from the long level and now sits well above it.

    The block medians of the recent deseasonalised values must rise twice in a row: a level
    shift (one rise, then flat) never matches, ordinary growth rises by much less than the
    noise per block, and a median ignores a spike inside a block. The rise must start from the
    level, not from well below it (the mirror of where it must end): blocks climbing out of a
    holiday dip or an outage are the series coming back, not a leak.
    """
    n_recent = base.recent.shape[-1]
    block = n_recent // LEAK_BLOCKS
    blocks = base.recent[..., n_recent - block * LEAK_BLOCKS :].reshape(*base.recent.shape[:-1], LEAK_BLOCKS, block)
    medians = nanmedian_last(blocks)
    steps = np.diff(medians, axis=-1)
    rising = np.all(steps > limits.leak_step_z * scale[..., None], axis=-1)
    rising &= ~(medians[..., 0] < -limits.sustained_z * scale)
    with np.errstate(invalid="ignore", divide="ignore"):
        above_long = (medians[..., -1] > limits.sustained_z * scale) & (
            np.log(observed / expected_long) > limits.sustained_z * scale
        )
    material: BoolArray = observed - expected_long >= _material(expected_long, limits)
    return np.asarray(rising & above_long & material, dtype=bool)


def _kind(
    spike: BoolArray,
    leak: BoolArray,
    sustained: BoolArray,
    is_drop: BoolArray,
    base: Forecast,
    scale: FloatArray,
    limits: Thresholds,
) -> np.ndarray:
    previous_up = base.recent[..., -1] > limits.sustained_z * scale
    kind = np.full(spike.shape, int(Kind.NONE), dtype=np.int8)
    kind[is_drop] = int(Kind.DROP)
    kind[spike] = int(Kind.SPIKE)
    kind[(spike & previous_up) | sustained] = int(Kind.BURST if limits.hourly else Kind.SHIFT)
    kind[leak] = int(Kind.BURST if limits.hourly else Kind.LEAK)
    return kind
