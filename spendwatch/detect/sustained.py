"""Sustained excess: a one-sided CUSUM of the standardised excess over the level before it.

A large, noisy account that shifts by +40% is 1-3 sigma a day: no single step is surprising,
and the short level adapts to the new cost within a few steps, so the step rule never fires.
Accumulating the evidence over consecutive steps does: Page's CUSUM of the log excess over the
reference level (a robust mean -- one Huber step from the median -- of the deseasonalised level
before the last ``span`` steps), standardised by the noise sigma, with an allowance ``k`` per step:

    S = max over m <= span + 1 of  sum over the last m steps of (log excess - k) / sigma

with each sum's deviation from its null mean ``-m k`` shrunk by ``sqrt(1 + m tau^2)``: the
reference is an estimate whose error (``tau`` sigmas) all ``m`` steps share.

``k`` is half the log of the materiality (``min_impact_pct``): CUSUM with ``k = delta / 2`` is
the optimal test for a shift of size ``delta``, and a shift smaller than the material one should
not accumulate. ``S`` is compared with a threshold ``h`` (sigma units) whose false-alarm rate on
pure noise is known (Siegmund's approximation, :func:`cusum_threshold`; docs/detection.md gives
the figures). A second chart with allowance :data:`LARGE_ALLOWANCE` (the optimal test for a shift of
three sigmas a step) and half the false-alarm budget reads the same steps: a 1.5-2.5x overrun on a
noisy series crosses it steps before the first, whose allowance is a fraction of a sigma there
(Lorden's multi-chart CUSUM approximates the test for a shift of unknown size).

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

REFERENCE_VARIANCE = 1.0 / 0.95
"""Variance of the reference level (a one-step Huber estimate, seasonal.HUBER_C) in units of spread^2 / n."""


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
    excess: FloatArray  # $ over the reference level over the best run where the test alarms (0 elsewhere)


def sustained_excess(
    observed: FloatArray,
    sustained: Sustained,
    recurring: FloatArray,
    scale: FloatArray,
    limits: SustainedLimits,
    autocorrelation: FloatArray,
) -> SustainedResult:
    """Decide the sustained-excess alarm for every (series, decided column).

    ``recurring`` is the log ratio a learnt calendar charge adds at the decided step: the charge
    is expected, so it is not an excess. ``autocorrelation`` (lag 1, per series and column; 0 for
    independent steps) widens the run sums' variance for steps that are not independent. The alarm
    is either chart's.
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
        run_lengths = limits.run_length * np.fmax(1.0, limits.reference_cost / expected)
        standardised = excess / scale[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        tau2 = REFERENCE_VARIANCE * (sustained.spread / scale) ** 2 / np.fmax(sustained.reference_points, 1.0)
    # The reference level is itself an estimate (variance REFERENCE_VARIANCE spread^2 / n from its n
    # positions), and every step of a run shares its error: on noise, the sum of the last m increments
    # (mean -m k) has variance m (1 + m tau^2) in sigma units, tau^2 = that variance / scale^2, where
    # the threshold assumes m. Each chart scales the sum's deviation from its mean back to that
    # variance, so the false-alarm rate is the designed one for every m (without it, ~2x the design on
    # Gaussian noise of 20-30% a day: tests/detect/test_model.py). Correlated steps (an intermittent
    # job's bursts) replace the 1 by correlated_sum_variance. The same for both charts: computed once.
    steps = np.arange(1, excess.shape[-1] + 1)
    run_variance = (
        correlated_sum_variance(autocorrelation, excess.shape[-1]) + steps * np.nan_to_num(tau2, nan=0.0)[..., None]
    )
    reading = _Reading(excess, standardised, dollars, now, run_variance, run_lengths)
    material = limits.allowance / scale
    chart = _chart(reading, material, 1.0, limits)
    large = _chart(reading, np.fmax(material, LARGE_ALLOWANCE), LARGE_BUDGET, limits)
    statistic = np.where(np.isnan(sustained.log_reference) | np.isnan(scale), np.nan, chart.statistic)
    alarm = (chart.alarm | large.alarm) & ~np.isnan(statistic)
    return SustainedResult(np.asarray(alarm, dtype=bool), statistic, chart.run, chart.excess)


LARGE_ALLOWANCE = 1.5
"""Allowance (sigmas) of the second chart: the optimal CUSUM for a shift of 3 sigmas a step, the
large end of what the sustained test sees (a step over ``step_z`` = 5 sigmas is the step rule's)."""

LARGE_BUDGET = 2.0
"""The second chart's average run length on noise, in multiples of the first's: the two together
raise at most 1.5 times the first chart's false alarms (the union bound; fewer, as both read the
same steps)."""


@dataclass(frozen=True)
class _Reading:
    """What every chart reads: the excess over the span and the decided step, and its error."""

    excess: FloatArray  # (..., span + 1) log excess over the reference level
    standardised: FloatArray  # the same in sigmas
    dollars: FloatArray  # the same in $
    now: FloatArray  # (...) the decided step's log excess
    run_variance: FloatArray  # (..., span + 1) variance of the sum of the last m steps on noise / m, sigma^2
    run_lengths: FloatArray  # (..., span + 1) run length on noise each step's own decision had (dollar-ranked)


def correlated_sum_variance(rho: FloatArray, steps: int) -> FloatArray:
    """Var(sum of m AR(1) steps) / (m sigma^2) for lag-1 correlation ``rho``, m = 1 .. ``steps`` (last axis).

    1 + 2 sum_{j<m} (1 - j/m) rho^j: 1 for independent steps, m for identical ones.
    """
    m = np.arange(1, steps + 1, dtype=np.float64)
    lags = np.arange(1, steps, dtype=np.float64)
    weights = np.clip(1.0 - lags[None, :] / m[:, None], 0.0, None)  # (m, lag)
    powers = np.asarray(rho, dtype=np.float64)[..., None] ** lags  # (..., lag)
    return np.asarray(1.0 + 2.0 * np.einsum("...l,ml->...m", powers, weights), dtype=np.float64)


def _chart(reading: _Reading, allowance: FloatArray, budget: float, limits: SustainedLimits) -> SustainedResult:
    """One CUSUM chart: allowance ``allowance`` (sigmas), threshold for ``budget`` times the run length on noise."""
    excess, standardised, dollars, now = reading.excess, reading.standardised, reading.dollars, reading.now
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        threshold = cusum_threshold(allowance, reading.run_lengths[..., -1] * budget)
        # Two steps at the cap reach the threshold but do not cross it, three can: a run of MIN_RUN
        # steps can alarm on its own and a shorter one cannot (at threshold / MIN_RUN, not even three could).
        cap = np.fmin(limits.cap, threshold / (MIN_RUN - 1))[..., None]
        increments = np.minimum(standardised - allowance[..., None], cap)
        # A step the step rule flags on its own (a runaway hour, a spike) is not evidence of a
        # moderate sustained excess: counted, the hours right after a runaway would alert. For the
        # span's steps that verdict is not kept, so a step over step_z in this frame stands for it;
        # the decided step's verdict is known (were it flagged, it alerts either way), so
        # it always counts: a third day at 5 sigma over the reference that the step rule, measuring
        # from its own expectation, leaves at 4.99 is the run's strongest evidence, not a spike.
        beyond = standardised > limits.step_z
        beyond[..., -1] = False
        increments = np.where(beyond, 0.0, increments)
    increments = np.nan_to_num(increments, nan=0.0)
    span_steps = increments.shape[-1]
    # Sums over the last m steps, m = 1 .. span + 1 (index 0 = the decided step alone).
    from_right = np.cumsum(increments[..., ::-1], axis=-1)
    # Each sum's deviation from its null mean, scaled to the run's variance (see sustained_excess).
    with np.errstate(divide="ignore", invalid="ignore"):
        drift = np.arange(1, span_steps + 1) * allowance[..., None]
        inflation = np.sqrt(reading.run_variance)
        from_right = np.nan_to_num((from_right + drift) / inflation - drift, nan=-np.inf)
    best = np.argmax(from_right, axis=-1)
    statistic = np.take_along_axis(from_right, best[..., None], axis=-1)[..., 0]
    run = best + 1
    span = excess.shape[-1]
    with np.errstate(invalid="ignore"):
        alarm = (
            (statistic > threshold)
            & (run < span)  # the run began inside the span: a young excess, not an old level
            & (run >= MIN_RUN)
            & (now > limits.allowance)
        )
    # The run's median, dollars and what came before it are read only where the test alarms (a
    # handful of cells in a fleet): the same decision, without three (series, span) reductions.
    run_dollars = np.zeros(statistic.shape)
    candidate = np.nonzero(alarm)
    if candidate[0].size:
        in_run = np.arange(span)[::-1] < run[candidate][:, None]
        run_excess = excess[candidate]
        run_dollars[candidate] = np.sum(np.where(in_run, dollars[candidate], 0.0), axis=-1)
        run_median = nanmedian_last(np.where(in_run, run_excess, np.nan))
        before_run = nanmean_last(np.where(in_run, np.nan, run_excess))
        # Told, then held for HOLD decisions: a run that keeps going is the same excess, already
        # reported; held while the run was younger than the span, a told shift went on flagging for
        # up to a span and re-alarmed whenever one low step moved the run's start.
        thresholds = cusum_threshold(allowance[candidate][:, None], reading.run_lengths[candidate] * budget)
        told_at = _first_crossing(
            increments[candidate], in_run, allowance[candidate], reading.run_variance[candidate], thresholds
        )
        with np.errstate(invalid="ignore"):
            alarm[candidate] = (
                ~(before_run > limits.allowance)  # ... and the steps before it were at the reference
                & (run_median > limits.allowance)
                & (run_dollars[candidate] >= limits.min_abs * run[candidate])
                & (told_at >= span - HOLD)  # ... and it was first told at most HOLD - 1 steps ago
            )
    return SustainedResult(np.asarray(alarm, dtype=bool), statistic, run, run_dollars)


HOLD = MIN_RUN + 1
"""Decisions a CUSUM alarm is held for after the run first crossed the threshold: told, then each further
step only confirms it (as :func:`filled_up`'s hold of MIN_RUN). One more than MIN_RUN because the crossing
is re-read in the decided step's frame (its reference level and sigma), which can place it a step earlier
than the decision that made it."""


def _first_crossing(
    increments: FloatArray, in_run: BoolArray, allowance: FloatArray, run_variance: FloatArray, threshold: FloatArray
) -> np.ndarray:
    """Span position (0 = oldest) where the alarming run's own sum first crossed the threshold.

    Per candidate cell (rows): the run's increments summed from its first step to each later one, each
    prefix scaled to its variance as the chart scales it, against the threshold that step's own
    decision had (``threshold``: (cells, span), dollar-ranked by that step's expected cost). Prefixes
    shorter than MIN_RUN cannot alarm. The span length where none crosses (the decided step's does).
    """
    span = increments.shape[-1]
    start = span - np.count_nonzero(in_run, axis=-1)
    sums = np.cumsum(np.where(in_run, increments, 0.0), axis=-1)
    m = np.arange(span)[None, :] - start[:, None] + 1
    variance = np.take_along_axis(run_variance, np.clip(m - 1, 0, span - 1), axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = (sums + m * allowance[:, None]) / np.sqrt(variance) - m * allowance[:, None]
        crossed = in_run & (m >= MIN_RUN) & (scaled > threshold)
    return np.asarray(np.where(crossed.any(axis=-1), np.argmax(crossed, axis=-1), span), dtype=np.int64)


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
