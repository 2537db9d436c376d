"""Sustained excess: a one-sided CUSUM of the standardised excess over the level before it.

A large, noisy account that shifts by +40% is 1-3 sigma a day: no single step is surprising,
and the short level adapts to the new cost within a few steps, so the step rule never fires.
Accumulating the evidence over consecutive steps does: Page's CUSUM of the log excess over the
reference level (the median deseasonalised level before the last ``span`` steps), standardised
by the noise sigma, with an allowance ``k`` per step:

    S = max over m <= span + 1 of  sum over the last m steps of (log excess - k) / sigma

``k`` is half the log of the materiality (``min_impact_pct``): CUSUM with ``k = delta / 2`` is
the optimal test for a shift of size ``delta``, and a shift smaller than the material one should
not accumulate. ``S`` is compared with a threshold ``h`` (sigma units) whose false-alarm rate on
pure noise is known (:func:`false_alarm_rate` simulates it; docs/detection.md gives the figures).

Robustness: each step's increment is capped, so one spike or one monthly fee inside the span
cannot carry the sum alone, and the run must be sustained (its median excess over ``k``).
Re-baselining: an alarm is held while the run started inside the span; a run that fills the
whole span is an old shift that has become the new normal (the step rule has already told).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spendwatch.detect.robust import BoolArray, FloatArray, nanmean_last, nanmedian_last
from spendwatch.detect.seasonal import Sustained

MIN_RUN = 3
"""Steps a sustained excess must span: one or two high steps are the step rule's business."""

SIEGMUND_OVERSHOOT = 1.166
"""Siegmund's correction for the overshoot of a Gaussian random walk over the boundary."""


def cusum_threshold(allowance: FloatArray, run_length: FloatArray | float) -> FloatArray:
    """CUSUM threshold ``h`` (sigma units) whose average run length on pure noise is ``run_length``.

    Siegmund's approximation for a one-sided CUSUM of N(0, 1) increments with allowance ``k``:
    ARL0 = (exp(2kb) - 2kb - 1) / (2k^2), b = h + 1.166. Solved for b by fixed-point iteration
    (the right-hand side is monotone; four rounds are exact to 1e-6 for ARL0 >= 10).
    """
    k = np.fmax(np.asarray(allowance, dtype=np.float64), 1e-3)
    b = np.log(2 * k * k * run_length + 1.0) / (2 * k)
    for _ in range(6):
        b = np.log(2 * k * k * run_length + 2 * k * b + 1.0) / (2 * k)
    return np.asarray(np.fmax(b - SIEGMUND_OVERSHOOT, 0.0), dtype=np.float64)


@dataclass(frozen=True)
class SustainedLimits:
    allowance: float  # k, log units per step
    run_length: float  # average steps between false alarms on pure noise at the reference cost
    reference_cost: float  # $ per step at which ``run_length`` applies; cheaper series get longer ones
    cap: float  # largest increment one step may add, sigma units
    min_abs: float  # $ per step of the run the total excess must reach (materiality)
    step_z: float  # a step this many sigmas over the reference is the step rule's: it adds nothing here


@dataclass(frozen=True)
class SustainedResult:
    alarm: BoolArray  # the decided step is inside a young, material, sustained excess
    statistic: FloatArray  # S, sigma units (NaN where undecidable)
    run: np.ndarray  # steps in the best run (including the decided one), 0 where none
    excess: FloatArray  # $ over the reference level over the best run


def sustained_excess(
    observed: FloatArray, sustained: Sustained, recurring: FloatArray, scale: FloatArray, limits: SustainedLimits
) -> SustainedResult:
    """Decide the sustained-excess alarm for every (series, decided column).

    ``recurring`` is the log ratio a learnt calendar charge adds at the decided step: the charge
    is expected, so it is not an excess.
    """
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_now = np.where(observed > 0, np.log(observed), np.nan)
        now = log_now - sustained.log_reference - recurring
        excess = np.concatenate([sustained.log_excess, now[..., None]], axis=-1)
        expected_now = np.exp(sustained.log_reference)
        expected = np.concatenate([sustained.expected, expected_now[..., None]], axis=-1)
        dollars = np.nan_to_num(expected * np.expm1(excess), nan=0.0, posinf=0.0, neginf=0.0)
        # Dollar-ranked: the false-alarm budget of a series is in proportion to its cost, so a
        # $1k/day account gets a hundredth of a $100k/day account's (and a far higher threshold).
        run_length = limits.run_length * np.fmax(1.0, limits.reference_cost / expected_now)
        threshold = cusum_threshold(limits.allowance / scale, run_length)
        cap = np.fmin(limits.cap, threshold / MIN_RUN)[..., None]
        standardised = excess / scale[..., None]
        increments = np.minimum((excess - limits.allowance) / scale[..., None], cap)
        # A step the step rule flags on its own (a runaway hour, a spike) is not evidence of a
        # moderate sustained excess: counted, the hours right after a runaway would alert.
        increments = np.where(standardised > limits.step_z, 0.0, increments)
    increments = np.nan_to_num(increments, nan=0.0)
    # Sums over the last m steps, m = 1 .. span + 1 (index 0 = the decided step alone).
    from_right = np.cumsum(increments[..., ::-1], axis=-1)
    best = np.argmax(from_right, axis=-1)
    statistic = np.take_along_axis(from_right, best[..., None], axis=-1)[..., 0]
    run = best + 1
    span = excess.shape[-1]
    in_run = np.arange(span)[::-1] < run[..., None]
    run_dollars = np.sum(np.where(in_run, dollars, 0.0), axis=-1)
    run_median = nanmedian_last(np.where(in_run, excess, np.nan))
    before_run = nanmean_last(np.where(in_run, np.nan, excess))
    with np.errstate(invalid="ignore"):
        alarm = (
            (statistic > threshold)
            & (run < span)  # the run began inside the span: a young excess, not an old level
            & ~(before_run > limits.allowance)  # ... and the steps before it were at the reference
            & (run >= MIN_RUN)
            & (now > limits.allowance)
            & (run_median > limits.allowance)
            & (run_dollars >= limits.min_abs * run)
        )
    statistic = np.where(np.isnan(sustained.log_reference) | np.isnan(scale), np.nan, statistic)
    return SustainedResult(np.asarray(alarm & ~np.isnan(statistic), dtype=bool), statistic, run, run_dollars)


def filled_up(observed: FloatArray, sustained: Sustained, limits: SustainedLimits, idle_share: float) -> BoolArray:
    """An intermittent job that now runs every step: its idle steps have filled up.

    A batch job that ran on a share ``p`` of the reference steps (before the run) runs ``r`` steps in a row (up to
    and including the decided one) with probability ``p^r``; such a run starts on a given step with
    probability ``(1 - p) p^r``. The alarm is raised once that is below ``1 / run length`` (the same
    dollar-ranked false-alarm budget as the CUSUM, on the series' mean cost per step: ``p`` times
    the cost of a run) and held for :data:`MIN_RUN` steps (the sustained rule's shortest run: an
    incident of a few days, not one flag); then the job running every step is the new normal. Each
    further day of the run only confirms what was told, and held for a whole span, an alarm raised
    late in a run (a cheap job has a long run to wait for) went on flagging the job for a week and
    more after the change it told. The dollars must be material: the run's cost over ``r`` steps at
    the usual rate, at least the per-step minimum on each step.
    """
    span = sustained.log_excess.shape[-1]
    expected_now = np.exp(sustained.log_reference)
    now_running = np.where(observed > 0, 1.0, np.where(np.isnan(observed), np.nan, 0.0))
    running = np.concatenate([sustained.tail_running, now_running[..., None]], axis=-1)
    steps = running.shape[-1]
    # Consecutive running steps ending at the decided one (a missing or idle step ends the run).
    broken = ~(running[..., ::-1] == 1.0)
    run = np.where(broken.any(axis=-1), np.argmax(broken, axis=-1), steps)
    # The usual rate is the rate before the run: a run longer than the span reaches back into the
    # reference positions, and counting its own steps there would raise ``p`` (and the run needed)
    # as the run grows, so a job that stays on every day would never be told.
    inside = np.fmax(run - 1 - span, 0).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        share = (sustained.reference_running - inside) / (sustained.reference_observed - inside)
        mean_cost = share * expected_now
        run_length = limits.run_length * np.fmax(1.0, limits.reference_cost / mean_cost)
        needed = np.ceil(np.log(run_length * (1.0 - share)) / -np.log(share))
        recent = np.concatenate(
            [sustained.expected * np.exp(np.nan_to_num(sustained.log_excess, nan=-np.inf)), observed[..., None]],
            axis=-1,
        )
        in_run = np.arange(span + 1)[::-1] < np.minimum(run, span + 1)[..., None]
        run_cost = np.sum(np.where(in_run, np.nan_to_num(recent, nan=0.0), 0.0), axis=-1)
        counted = np.minimum(run, span + 1)
        alarm = (
            (share < 1.0 - idle_share)
            & (share > 0)
            & (run >= needed)
            & (run < needed + MIN_RUN)  # told, then running every step is the new normal
            & (run < steps)  # the run's start is in sight
            & (run_cost - counted * mean_cost >= limits.min_abs * counted)
        )
    return np.asarray(alarm, dtype=bool)
