"""Robust seasonal decomposition of a trailing window, vectorised over series and steps.

For a decided column ``t`` the model looks only at the window ``t-W .. t-1`` (``W`` a whole
number of seasonal cycles, so window position 0 has the same phase as ``t``), in log dollars:

1. cycle levels: the median of each short cycle (a week of days, a day of hours);
2. short season: per phase, the median over cycles of (value - cycle level) - STL's
   cycle-subseries smoothing with a median instead of LOESS;
3. weekly season for hourly data: per hour of the week, the median over weeks of what the
   short season leaves - MSTL's second period (hourly resolution, because weekends start at
   a local-time hour, not at 00:00 UTC);
4. level: the median of the last ``level_points`` observed deseasonalised values (a short
   trend estimate that forgets a level shift after half that many steps);
5. long level: the median of every deseasonalised value in the window (slow to move; used
   to tell "back to normal after a dip" from "new anomaly");
6. scale: 1.4826 * MAD / sqrt(2) of the changes between successive observed deseasonalised
   values - a ramp or a shift inside the window barely moves it, unlike a spread around a
   level. The weekly season used here is estimated from the *other* weeks (held out): a
   phase seen once fits its own noise, and the scale would collapse to zero.
7. additive or multiplicative: in log dollars a level change *scales* the season. A constant
   load added to (or removed from) a strongly seasonal series does not: it shrinks (or widens)
   the pattern's relative amplitude, and a scaled season would flag every night as a burst and
   every working hour as a drop until the season has re-learnt, weeks later. So each window
   also asks whether the last cycle is better explained from the same phases one, two, ...
   weeks earlier by one dollar offset or by one ratio (:func:`offset_advantage`); where the
   offset wins by more than ``additive_gate`` noise sigmas, the level and season (steps 1-5)
   are re-estimated in dollars and the forecast is their sum. Only those windows pay for the
   second decomposition; the noise scale stays the log-space one.

Zeros (and credits) are treated as "did not run" rather than as cost observations: batch
jobs and late-starting series would otherwise drag the level to zero and make every run look
like a spike. Every statistic is a median, so a spike inside the window moves nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spendwatch.detect.robust import (
    BoolArray,
    FloatArray,
    keep_last_valid,
    mad_sigma_last,
    nanmean_last,
    nanmedian_and_quantile_last,
    nanmedian_last,
)

USUAL_QUANTILE = 0.9
"""A step no higher than this quantile of its window's deseasonalised costs happens routinely
(one step in ten or more): it is not a spike, however small the robust sigma."""

IntArray = np.ndarray[tuple[int, ...], np.dtype[np.int64]]

_CHUNK_ELEMENTS = 3_000_000
"""Window elements processed at once: bounds peak memory at a few hundred MB."""


@dataclass(frozen=True)
class WindowSpec:
    """Shape of the trailing window for one granularity, and when it is decomposed additively."""

    cycle: int  # short period in steps (7 for daily, 24 for hourly)
    n_cycles: int  # window length in cycles
    weekly_cycles: int  # cycles per week for a second, weekly season (0 = none)
    level_points: int  # observed points the short level is the median of
    min_points: int  # observed points needed before deciding at all
    additive_gate: float = 0.5  # noise sigmas an offset must beat a ratio by (inf = never additive)
    scale_floor: float = 0.02  # floor on the noise sigma the gate is measured in
    sustained_span: int = 0  # window positions the sustained-excess test reads after its reference (0 = none)
    sustained_reference: int = 0  # window positions before the span whose median level is the reference

    @property
    def length(self) -> int:
        return self.cycle * self.n_cycles


@dataclass(frozen=True)
class Forecast:
    """One-step-ahead robust forecast for each (series, decided column), in log dollars."""

    log_expected: FloatArray  # short level + season
    log_expected_long: FloatArray  # long level + season
    log_scale: FloatArray  # robust sigma of the noise (from successive changes)
    log_spread: FloatArray  # robust sigma of the deseasonalised running costs around their median
    log_usual_high: FloatArray  # the window's USUAL_QUANTILE deseasonalised level + season: a routine high
    zero_share: FloatArray  # share of $0 (or credit) observations in the window
    recent: FloatArray  # (n, m, k) last k deseasonalised values minus the long level
    decidable: BoolArray  # enough observed history to decide
    sustained: Sustained  # the last window positions against the level before them


RUN_TAIL = 3
"""Spans of the window's tail in which a run of consecutive running steps is counted."""

MIN_CORRELATION_PAIRS = 8
"""Adjacent pairs of known residuals below which no autocorrelation is read (the bound is too loose)."""

MAX_CORRELATION = 0.95
"""Largest lag-1 autocorrelation taken: at 1 a run of m steps would count as a single one."""

HUBER_C = 1.345
"""Huber's constant (robust sigmas) for the sustained test's reference level: 95% of the mean's
efficiency on Gaussian noise, where the median has 64% (asymptotic variance 1/0.95 sigma^2 / n)."""


@dataclass(frozen=True)
class Sustained:
    """The last ``sustained_span`` window positions measured against the level *before* them.

    The short level adapts to a shift within a few steps, so a shift that is small against the
    noise never stands out from it; the sustained-excess test (:mod:`spendwatch.detect.sustained`)
    accumulates these excesses instead. The reference is the median deseasonalised level of the
    window positions before the span, so the span's own values cannot pull it up.
    """

    log_excess: FloatArray  # (n, m, s) log(cost) - (reference level + season), NaN = idle or missing
    expected: FloatArray  # (n, m, s) dollars at the reference level: exp(reference level + season)
    log_reference: FloatArray  # (n, m) reference level + season at the decided column
    spread: FloatArray  # (n, m) winsorised std of the reference positions around the reference level
    reference_running: FloatArray  # (n, m) reference positions with a positive cost
    reference_observed: FloatArray  # (n, m) reference positions with a known cost ($0 included)
    tail_running: FloatArray  # (n, m, 3 s) last window positions: 1 = a positive cost, 0 = $0 (idle), NaN = missing
    reference_points: FloatArray  # (n, m) positions the reference level is estimated from (running, after a rebase)
    autocorrelation: FloatArray  # (n, m) lag-1 autocorrelation of the reference residuals, 0 unless significant


def forecast(values: FloatArray, columns: IntArray, spec: WindowSpec, rebase_at: IntArray, recent: int) -> Forecast:
    """Forecast every column in ``columns`` from its own trailing window only."""
    step = max(1, _CHUNK_ELEMENTS // max(1, values.shape[0] * spec.length))
    parts = [
        _forecast_chunk(
            _windows(values, columns[i : i + step], spec.length), columns[i : i + step], spec, rebase_at, recent
        )
        for i in range(0, len(columns), step)
    ]
    if not parts:
        empty = np.empty((values.shape[0], 0))
        no_recent = np.empty((values.shape[0], 0, recent))
        no_span = np.empty((values.shape[0], 0, spec.sustained_span))
        no_tail = np.empty((values.shape[0], 0, RUN_TAIL * spec.sustained_span))
        no_sustained = Sustained(no_span, no_span, empty, empty, empty, empty, no_tail, empty, empty)
        return Forecast(empty, empty, empty, empty, empty, empty, no_recent, empty.astype(bool), no_sustained)
    return concatenate(parts)


def concatenate(parts: list[Forecast]) -> Forecast:
    """One forecast from forecasts of consecutive groups of columns."""
    joined = {
        f: np.concatenate([getattr(p, f) for p in parts], axis=1)
        for f in Forecast.__dataclass_fields__
        if f != "sustained"
    }
    sustained = Sustained(
        *(np.concatenate([getattr(p.sustained, f) for p in parts], axis=1) for f in Sustained.__dataclass_fields__)
    )
    return Forecast(**joined, sustained=sustained)


def _windows(values: FloatArray, columns: IntArray, length: int) -> FloatArray:
    """(n_series, len(columns), length) copies of the steps before each column; NaN before step 0.

    Gathering only the requested windows (rather than padding the whole panel) keeps a fleet
    scan of the newest column at one small array per chunk.
    """
    index = columns[:, None] - length + np.arange(length)[None, :]
    gathered = values[:, np.maximum(index, 0)]
    gathered[:, index < 0] = np.nan
    return gathered


def _forecast_chunk(
    window: FloatArray, columns: IntArray, spec: WindowSpec, rebase_at: IntArray, recent: int
) -> Forecast:
    observed = ~np.isnan(window)
    zeros = observed & (window <= 0.0)
    running = np.where(window > 0, window, np.nan)
    log_cost = np.log(running)
    keep = _after_rebase_mask(columns, rebase_at, window.shape[-1])
    season, season_held_out = _season(log_cost, spec)
    fit = _level_fit(log_cost, season, keep, spec, recent, additive=False)
    changes = _successive_changes(log_cost - season_held_out)
    scale = mad_sigma_last(changes - nanmedian_last(changes)[..., None]) / np.sqrt(2.0)
    around = log_cost - season_held_out
    spread = mad_sigma_last(around - nanmedian_last(around)[..., None])
    n_running = np.count_nonzero(~np.isnan(log_cost), axis=-1)
    decidable = (n_running >= spec.min_points) & ~np.isnan(fit.log_expected)
    sustained = _sustained(log_cost, observed, season, season_held_out, keep, spec)
    fit = _additive_where_it_explains_better(fit, running, log_cost, keep, scale, spec)
    return Forecast(
        log_expected=fit.log_expected,
        log_expected_long=fit.log_expected_long,
        log_scale=scale,
        log_spread=spread,
        log_usual_high=fit.usual_high,
        zero_share=np.count_nonzero(zeros, axis=-1) / np.maximum(np.count_nonzero(observed, axis=-1), 1),
        recent=fit.recent,
        decidable=decidable,
        sustained=sustained,
    )


def _sustained(
    log_cost: FloatArray,
    observed: BoolArray,
    season: FloatArray,
    season_held_out: FloatArray,
    keep: BoolArray,
    spec: WindowSpec,
) -> Sustained:
    """The last ``sustained_span`` positions of each window against the median level of the
    ``sustained_reference`` positions before them (all of them if 0): recent enough that a shift
    older than the span becomes the reference a few steps later, long enough for a steady median."""
    length, span = log_cost.shape[-1], spec.sustained_span
    first = max(0, length - span - spec.sustained_reference) if spec.sustained_reference else 0
    deseasonalised = np.where(keep, log_cost - season, np.nan)
    before_span = deseasonalised[..., first : length - span]
    reference = nanmedian_last(before_span)
    # One Huber step from the median: every step of a sustained run shares this estimate's error
    # (sustained.py), so an efficient estimate matters; a spike or a dip still moves it by a bounded amount.
    deviation = before_span - reference[..., None]
    bound = HUBER_C * mad_sigma_last(deviation)[..., None]
    reference = reference + nanmean_last(np.clip(deviation, -bound, bound))
    # The spread is that of the reference positions around the reference level with the season
    # estimated from the other weeks (hourly): an in-sample hour-of-week offset fits its own noise.
    # A winsorised standard deviation: the CUSUM sums residuals, so what matters is their variance,
    # which a MAD understates when the costs are a mixture (two kinds of batch run, say); the
    # clip at 4 robust sigmas keeps one spike in the reference from inflating it.
    residuals = np.where(keep, log_cost - season_held_out, np.nan)[..., first : length - span]
    residuals = residuals - nanmedian_last(residuals)[..., None]
    robust = mad_sigma_last(residuals)
    clipped = np.clip(residuals, -4 * robust[..., None], 4 * robust[..., None])
    spread = np.sqrt(nanmean_last(clipped**2))
    expected_log = reference[..., None] + season[..., length - span :]
    with np.errstate(over="ignore"):
        expected = np.exp(expected_log)
    window = np.exp(log_cost)  # $0 and credits are NaN in log_cost: recover "idle" from the gaps' mask
    before = window[..., first : length - span]
    observed_before = observed[..., first : length - span]
    running_before = np.count_nonzero(~np.isnan(before), axis=-1).astype(np.float64)
    observed_count = np.count_nonzero(observed_before, axis=-1).astype(np.float64)
    tail = min(length, RUN_TAIL * span)
    tail_running = np.where(
        observed[..., length - tail :], (~np.isnan(window[..., length - tail :])).astype(np.float64), np.nan
    )
    return Sustained(
        log_excess=log_cost[..., length - span :] - expected_log,
        expected=expected,
        log_reference=reference + season[..., 0],
        spread=spread,
        reference_running=running_before,
        reference_observed=observed_count,
        tail_running=tail_running,
        reference_points=np.count_nonzero(~np.isnan(before_span), axis=-1).astype(np.float64),
        autocorrelation=_lag_one(clipped),
    )


def _lag_one(residuals: FloatArray) -> FloatArray:
    """Lag-1 autocorrelation of adjacent residuals (both known), 0 unless above Bartlett's 95% bound.

    A batch job's runs come in bursts of alike days: adjacent steps of a burst share most of their
    noise, and a sum of m of them varies far more than m independent ones (sustained.py). Only a
    positive correlation above what noise alone gives (1.96 / sqrt(pairs)) from 8 pairs or more counts.
    """
    now, before = residuals[..., 1:], residuals[..., :-1]
    both = ~(np.isnan(now) | np.isnan(before))
    pairs = np.count_nonzero(both, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        products = np.sum(np.where(both, now * before, 0.0), axis=-1)
        squares = np.sum(np.where(both, 0.5 * (now * now + before * before), 0.0), axis=-1)
        rho = products / squares
        significant = (rho > 1.96 / np.sqrt(np.fmax(pairs, 1))) & (pairs >= MIN_CORRELATION_PAIRS)
    return np.asarray(np.where(significant, np.clip(rho, 0.0, MAX_CORRELATION), 0.0), dtype=np.float64)


@dataclass(frozen=True)
class _LevelFit:
    """What the decision needs from one decomposition, in log dollars."""

    log_expected: FloatArray  # (...,) short level + season at the decided column
    log_expected_long: FloatArray  # (...,) long level + season at the decided column
    recent: FloatArray  # (..., k) log of the last k deseasonalised values over the long level
    usual_high: FloatArray  # (...,) USUAL_QUANTILE of the deseasonalised window + season at the decided column


def _level_fit(
    series: FloatArray, season: FloatArray, keep: BoolArray, spec: WindowSpec, recent: int, *, additive: bool
) -> _LevelFit:
    """Short and long level of ``series - season``: log dollars, or dollars if ``additive``."""
    deseasonalised = np.where(keep, series - season, np.nan)
    short_mask = keep_last_valid(~np.isnan(deseasonalised), spec.level_points)
    level = nanmedian_last(np.where(short_mask, deseasonalised, np.nan))
    level_long, high = nanmedian_and_quantile_last(deseasonalised, USUAL_QUANTILE)
    season_now = season[..., 0]
    last = deseasonalised[..., -recent:]
    if not additive:
        return _LevelFit(level + season_now, level_long + season_now, last - level_long[..., None], high + season_now)
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = last / level_long[..., None]
    return _LevelFit(
        _log_positive(level + season_now),
        _log_positive(level_long + season_now),
        _log_positive(relative),
        _log_positive(high + season_now),
    )


def _log_positive(values: FloatArray) -> FloatArray:
    """log of the positive entries, NaN elsewhere (a dollar forecast at or below zero is unusable)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(values > 0, np.log(values), np.nan)


def _additive_where_it_explains_better(
    fit: _LevelFit, running: FloatArray, log_cost: FloatArray, keep: BoolArray, scale: FloatArray, spec: WindowSpec
) -> _LevelFit:
    """``fit`` with the additive decomposition's level and season where an offset explains the
    last cycle better than a ratio does (see :func:`offset_advantage`).

    Only those windows are decomposed a second time, in dollars, so the usual case costs one
    cheap test. An additive forecast at or below $0 is not used.
    """
    noise = np.fmax(scale, spec.scale_floor)
    chosen = np.nonzero(offset_advantage(running, log_cost, spec) > spec.additive_gate * noise)
    if len(chosen[0]) == 0:
        return fit
    dollars = running[chosen]
    season, _ = _season(dollars, spec, held_out=False)
    additive = _level_fit(dollars, season, keep[chosen], spec, fit.recent.shape[-1], additive=True)
    usable = ~np.isnan(additive.log_expected) & ~np.isnan(additive.log_expected_long)
    where = tuple(axis[usable] for axis in chosen)
    merged = _LevelFit(fit.log_expected.copy(), fit.log_expected_long.copy(), fit.recent.copy(), fit.usual_high)
    merged.log_expected[where] = additive.log_expected[usable]
    merged.log_expected_long[where] = additive.log_expected_long[usable]
    merged.recent[where] = additive.recent[usable]
    return merged


def offset_advantage(running: FloatArray, log_cost: FloatArray, spec: WindowSpec) -> FloatArray:
    """How much better an offset than a ratio explains the last cycle, in mean absolute log error.

    Each of the last ``level_points`` steps is paired with the step of the same phase one, two,
    ... seasonal periods (a week) earlier in the window. Per lag, one ratio (the median log
    change: the multiplicative reading) and one offset (the median dollar change: the additive
    reading) are fitted robustly, and each pair's absolute log error under both is compared. A
    pair's error is capped at ``log 2``: a pair that straddles a change neither reading can
    explain, and a negative additive prediction, count as one plain miss rather than dominating.
    Positive = the additive reading explains better. NaN where nothing pairs up.
    """
    length = running.shape[-1]
    span = spec.level_points
    period = spec.cycle * (spec.weekly_cycles or 1)
    now, now_log = running[..., length - span :], log_cost[..., length - span :]
    advantage = np.zeros(running.shape[:-1])
    pairs = np.zeros(running.shape[:-1])
    for lag in range(period, length - span + 1, period):
        then = running[..., length - span - lag : length - lag]
        log_change = now_log - log_cost[..., length - span - lag : length - lag]
        by_ratio = np.fmin(np.abs(log_change - nanmedian_last(log_change)[..., None]), PAIR_ERROR_CAP)
        predicted = then + nanmedian_last(now - then)[..., None]
        with np.errstate(divide="ignore", invalid="ignore"):
            by_offset = np.where(
                predicted > 0, np.fmin(np.abs(now_log - np.log(predicted)), PAIR_ERROR_CAP), PAIR_ERROR_CAP
            )
        paired = ~np.isnan(log_change)
        advantage += np.sum(np.where(paired, by_ratio - by_offset, 0.0), axis=-1)
        pairs += np.count_nonzero(paired, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(advantage / pairs, dtype=np.float64)


PAIR_ERROR_CAP = float(np.log(2.0))
"""Largest absolute log error one pair can contribute to :func:`offset_advantage`."""


def _after_rebase_mask(columns: IntArray, rebase_at: IntArray, length: int) -> BoolArray:
    """Window positions at or after each series' rebase column (the only ones the levels use)."""
    positions = columns[None, :, None] - length + np.arange(length)[None, None, :]
    return np.asarray(positions >= rebase_at[:, None, None], dtype=bool)


def _season(running: FloatArray, spec: WindowSpec, *, held_out: bool = True) -> tuple[FloatArray, FloatArray]:
    """Additive seasonal component at every window position (0 where unknown).

    Returns the component and an out-of-sample version for the noise scale: a phase
    estimated from one or two weeks fits its own noise, so the scale would shrink to nothing.
    """
    lead = running.shape[:-1]
    cycles = running.reshape(*lead, spec.n_cycles, spec.cycle)
    cycle_level = nanmedian_last(cycles)
    by_phase = np.swapaxes(cycles - cycle_level[..., None], -1, -2)
    short = _centred(nanmedian_last(by_phase))
    season = np.broadcast_to(short[..., None, :], cycles.shape).reshape(running.shape)
    if not spec.weekly_cycles:
        return season, season
    weekly, weekly_held_out = _weekly(running - season, spec.cycle * spec.weekly_cycles, held_out=held_out)
    return season + weekly, season + weekly_held_out


def _weekly(without_short: FloatArray, period: int, *, held_out: bool = True) -> tuple[FloatArray, FloatArray]:
    """Hour-of-week offsets left after the daily season (weekends, Friday evenings).

    Also returns, for each week, the offsets estimated from the other weeks only.
    """
    lead = without_short.shape[:-1]
    weeks = without_short.reshape(*lead, -1, period)
    week_level = nanmedian_last(weeks)
    deviations = np.swapaxes(weeks - week_level[..., None], -1, -2)
    offsets = _centred(nanmedian_last(deviations))
    fitted = np.broadcast_to(offsets[..., None, :], weeks.shape)
    if not held_out:
        return fitted.reshape(without_short.shape), fitted.reshape(without_short.shape)
    held_out_offsets = np.empty_like(weeks)
    for week in range(weeks.shape[-2]):
        others = np.delete(deviations, week, axis=-1)
        held_out_offsets[..., week, :] = _centred(nanmedian_last(others))
    return fitted.reshape(without_short.shape), held_out_offsets.reshape(without_short.shape)


def _centred(profile: FloatArray) -> FloatArray:
    filled = np.nan_to_num(profile, nan=0.0)
    centre = nanmedian_last(profile)
    return filled - np.nan_to_num(centre, nan=0.0)[..., None]


def _successive_changes(deseasonalised: FloatArray) -> FloatArray:
    """Change from the previous observed value at each observed position (NaN elsewhere)."""
    valid = ~np.isnan(deseasonalised)
    index = np.where(valid, np.arange(deseasonalised.shape[-1]), -1)
    latest = np.maximum.accumulate(index, axis=-1)
    lead = deseasonalised.shape[:-1]
    previous = np.concatenate([np.full((*lead, 1), -1), latest[..., :-1]], axis=-1)
    prior = np.take_along_axis(deseasonalised, np.maximum(previous, 0), axis=-1)
    return np.where(valid & (previous >= 0), deseasonalised - prior, np.nan)
