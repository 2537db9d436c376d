"""Turns a robust forecast into decisions: robust z, the materiality gate and the kind."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spendwatch.detect.kinds import Kind
from spendwatch.detect.robust import BoolArray, FloatArray
from spendwatch.detect.seasonal import Forecast

RECURRING_SCALE_PCT = 0.1
"""A learnt monthly charge is trusted to +-10%: its amount is an estimate from 1-3 samples."""

_TINY = 1e-9


@dataclass(frozen=True)
class Thresholds:
    z: float
    sustained_z: float
    min_abs: float
    min_pct: float
    scale_floor_pct: float
    intermittent_zero_share: float
    hourly: bool


@dataclass(frozen=True)
class Decision:
    expected: FloatArray
    lower: FloatArray
    upper: FloatArray
    score: FloatArray
    excess: FloatArray
    is_anomaly: BoolArray
    is_drop: BoolArray
    kind: np.ndarray


def decide(observed: FloatArray, base: Forecast, recurring: FloatArray, limits: Thresholds) -> Decision:
    """Alert where a step is both statistically surprising and material in dollars.

    ``observed`` holds the decided columns' values, aligned with ``base`` and ``recurring``.
    """
    expected = base.expected + recurring
    expected_long = base.expected_long + recurring
    scale = _effective_scale(base.scale, expected, recurring, limits.scale_floor_pct)
    usable = base.decidable & ~np.isnan(observed)
    with np.errstate(invalid="ignore"):
        score = np.where(usable, (observed - expected) / scale, np.nan)
        excess = observed - expected
        upper = _upper_bound(expected, expected_long, scale, limits)
        is_anomaly = usable & (observed > 0) & (observed > upper)
        lower = np.minimum(expected - limits.z * scale, expected - _material(expected, limits))
        idle = (observed == 0) & (base.zero_share > limits.intermittent_zero_share)
        is_drop = usable & ~is_anomaly & (observed < lower) & ~idle
    kind = _kind(is_anomaly, is_drop, base, scale, limits)
    return Decision(expected, lower, upper, score, excess, is_anomaly, is_drop, kind)


def _effective_scale(
    scale: FloatArray, expected: FloatArray, recurring: FloatArray, floor_pct: float
) -> FloatArray:
    floors = np.maximum(floor_pct * np.abs(expected), RECURRING_SCALE_PCT * recurring)
    return np.fmax(np.fmax(scale, floors), _TINY)


def _material(expected: FloatArray, limits: Thresholds) -> FloatArray:
    return np.maximum(limits.min_abs, limits.min_pct * np.maximum(expected, 0.0))


def _upper_bound(
    expected: FloatArray, expected_long: FloatArray, scale: FloatArray, limits: Thresholds
) -> FloatArray:
    """Lowest value that alerts: above the short AND the long expectation, by z and by $.

    The long expectation stops "back to normal after a holiday dip" from alerting; the short
    one lets a level shift become the new normal within ``level_points / 2`` steps.
    """
    short = expected + np.maximum(limits.z * scale, _material(expected, limits))
    long = expected_long + np.maximum(limits.z * scale, _material(expected_long, limits))
    return np.fmax(short, long)


def _kind(
    is_anomaly: BoolArray, is_drop: BoolArray, base: Forecast, scale: FloatArray, limits: Thresholds
) -> np.ndarray:
    previous_up = base.recent_excess[..., -1] > limits.sustained_z * scale
    rising = np.all(np.diff(base.recent_excess, axis=-1) > 0, axis=-1) & previous_up
    kind = np.full(is_anomaly.shape, int(Kind.NONE), dtype=np.int8)
    kind[is_drop] = int(Kind.DROP)
    kind[is_anomaly] = int(Kind.SPIKE)
    if limits.hourly:
        kind[is_anomaly & previous_up] = int(Kind.BURST)
    else:
        kind[is_anomaly & previous_up] = int(Kind.SHIFT)
        kind[is_anomaly & rising] = int(Kind.LEAK)
    return kind
