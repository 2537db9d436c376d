"""A series' own upper tail: how big its routine one-day bumps are, learnt from a long history.

The spike rule measures a step against the noise of an 8-week window (``z`` robust sigmas of
successive changes). Some low-noise series also have a heavy upper tail: a few unexplained
+40-130% days a year that are simply how that account behaves. Eight weeks hold at most one or
two of them, too few for any window statistic to learn their rate, so each one alerts.

Here every day of the last ``tail_days`` (a year) is measured as a *one-day bump*: its log
cost over the median of the same weekday in the ``lags`` weeks before it, less how far its
neighbours on either side stood above theirs (so a level shift, where the neighbours are as
high, is no bump; a lone high day is). If the series had at least ``tail_count`` bumps as big
as today's step in that year, a step that size is routine for it: alerting on it would cost at
least ``tail_count`` false alarms per series-year (an empirical exceedance rate, the
peaks-over-threshold reading of extreme-value calibration with no fitted shape). Only the spike
rule is held back: a sustained excess, a leak or a filled-up job alerts as before, and a series
whose tail is thin (fewer than ``tail_count`` big bumps) keeps the window rule unchanged.

Causal: the bump of day ``s`` reads columns ``<= s + 1`` and the decided column ``t`` reads the
bumps of ``s <= t - 2`` only, so deciding the newest column alone gives the walk-forward value.
Only days that stood above both their baseline and their neighbours are bumps (a minority of
days), so the calendar look-up touches few cells. Cost: a few element-wise passes over the panel
(the baseline is a sorting network, not a sort), a calendar look-up per bump, and one partial
sort of ``tail_days`` values per decided cell of the series that have ``tail_count`` bumps at
all; rows are processed in chunks, so memory stays bounded in a fleet scan.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from spendwatch.detect.calendar import CHARGE_PERIODS, month_ends_months_earlier, same_day_months_earlier
from spendwatch.detect.robust import FloatArray

IntArray = np.ndarray[tuple[int, ...], np.dtype[np.int64]]

_CHUNK_ELEMENTS = 2_000_000
"""History window elements partitioned at once: bounds peak memory at a few tens of MB."""

_ROW_CHUNK_ELEMENTS = 2**16
"""Panel elements whose bumps are measured at once: the dozen working arrays of a chunk (0.5 MB each)
stay in the CPU's caches, where a model block's (4 MB each) ran from memory: ~2x faster."""


@dataclass(frozen=True)
class TailSpec:
    """How the routine upper tail is learnt (daily data; ``count == 0`` turns the rule off)."""

    cycle: int = 7  # steps between the same phase (a weekday)
    lags: int = 4  # earlier cycles a step's baseline is the median of
    days: int = 365  # steps of history the bumps are counted over
    count: int = 3  # bumps at least this big in that history make a step routine
    min_log: float = 0.0  # smallest log bump that counts (above 0: a day below its baseline is no bump)
    charge_log: float = 0.0  # smallest log bump that may be a recurring charge (looked up in the calendar)


def same_phase_baseline(log_values: FloatArray, spec: TailSpec) -> FloatArray:
    """(n, steps) median log cost of the same phase in the ``lags`` cycles before each column.

    NaN unless at least ``lags - 1`` of them ran (a positive cost): a job that was idle on most of
    those days has no baseline a bump could be measured against (its first runs after a long
    pause would read as a heavy tail).
    """
    n, steps = log_values.shape
    lead = spec.lags * spec.cycle
    padded = np.full((n, lead + steps), np.nan)
    padded[:, lead:] = log_values
    return _baseline_of_padded(padded, spec)


def _baseline_of_padded(padded: FloatArray, spec: TailSpec) -> FloatArray:
    """:func:`same_phase_baseline` of ``padded[:, lags * cycle:]``, whose leading columns are NaN."""
    if spec.lags != 4:
        return _baseline_by_sort(padded, spec)
    steps = padded.shape[1] - spec.lags * spec.cycle
    # The middle two of four (a sorting network's first three layers): {max of the pair minima, min of
    # the pair maxima}; missing (NaN) sorts last, as fmin keeps the other value and maximum carries NaN
    # up; a lag ran where its log is finite. The pair (t - cycle, t - 2 cycles) is the pair
    # (t - 3 cycles, t - 4 cycles) two cycles later, so each pair's order (and count of running days)
    # is computed once, over every column.
    cycle = spec.cycle
    later, earlier = padded[:, cycle:], padded[:, :-cycle]
    low, high = np.fmin(later, earlier), np.maximum(later, earlier)
    ran = np.isfinite(padded).view(np.int8)
    pair_ran = ran[:, cycle:] + ran[:, :-cycle]
    near, far = slice(2 * cycle, 2 * cycle + steps), slice(0, steps)
    second, third = np.maximum(low[:, near], low[:, far]), np.fmin(high[:, near], high[:, far])
    valid = np.add(pair_ran[:, near], pair_ran[:, far])
    median = np.fmin(second, third)  # the lower middle one: the median of three valid values
    with np.errstate(invalid="ignore"):
        np.copyto(median, np.multiply(0.5, np.add(second, third, out=second), out=second), where=valid == 4)
    np.copyto(median, np.nan, where=valid < 3)
    return median


def _baseline_by_sort(padded: FloatArray, spec: TailSpec) -> FloatArray:
    """:func:`_baseline_of_padded` for any number of lags: a sort of the lagged values of each column."""
    lead = spec.lags * spec.cycle
    steps = padded.shape[1] - lead
    stacked = np.stack([padded[:, lead - k * spec.cycle :][:, :steps] for k in range(1, spec.lags + 1)], axis=-1)
    stacked[np.isnan(stacked)] = np.inf  # sorts last
    valid = np.count_nonzero(np.isfinite(stacked), axis=-1)
    with np.errstate(invalid="ignore"):
        ordered = np.sort(stacked, axis=-1)
        full, short = spec.lags, spec.lags - 1
        median_full = 0.5 * (ordered[..., (full - 1) // 2] + ordered[..., full // 2])
        median_short = 0.5 * (ordered[..., max(short - 1, 0) // 2] + ordered[..., short // 2])
    median = np.where(valid == spec.lags, median_full, np.where(valid == spec.lags - 1, median_short, np.nan))
    return np.asarray(median, dtype=np.float64)


def one_day_bumps(log_values: FloatArray, baseline: FloatArray, min_log: float = 0.0) -> FloatArray:
    """(n, steps) how far each day stood above its baseline *and* above both neighbours' excess.

    NaN where the day did not run, has no baseline or stood no more than ``min_log`` above; an idle or
    unknown neighbour does not lower it. The last column has no right neighbour yet, so its value
    is not a bump's: no decision reads it (a decision at ``t`` reads the bumps of days ``<= t - 2``,
    see the module docstring).
    """
    excess = log_values - baseline
    # The higher neighbour's excess (fmax: a missing neighbour does not count), from shifted slices.
    neighbours = np.empty_like(excess)
    np.fmax(excess[:, :-2], excess[:, 2:], out=neighbours[:, 1:-1])
    if excess.shape[1] > 1:
        neighbours[:, 0], neighbours[:, -1] = excess[:, 1], excess[:, -2]
    else:
        neighbours[:] = np.nan
    with np.errstate(invalid="ignore"):
        np.fmax(neighbours, 0.0, out=neighbours)
        bumps = np.minimum(excess, np.subtract(excess, neighbours, out=neighbours), out=neighbours)
        np.copyto(bumps, np.nan, where=np.logical_not(bumps > min_log))
    return bumps


def charge_slots(timestamps: np.ndarray) -> IntArray:
    """(steps, slots) the same calendar slot 1-24 months earlier (day and month end); -1 = none."""
    lags = sorted({lag for period in CHARGE_PERIODS for lag in period})
    slots = np.concatenate(
        [same_day_months_earlier(timestamps, lags), month_ends_months_earlier(timestamps, lags)], axis=1
    )
    return np.asarray(slots, dtype=np.int64)


def not_recurring(bumps: FloatArray, slots: IntArray, charge_log: float = 0.0) -> FloatArray:
    """``bumps`` with calendar charges removed (set to NaN).

    A bump on a day whose same calendar slot one billing period or more earlier (the same day or
    the same month end, 1-24 months back: :data:`~spendwatch.detect.calendar.CHARGE_PERIODS`,
    ``slots`` from :func:`charge_slots`) also held a bump at least half as big (in log) is a
    recurring charge, which the charge rule judges against its own earlier size; counted here, a
    monthly charge would make twelve "routine" bumps a year and hide every spike below its size.
    Its first occurrence still counts. Only bumps above ``charge_log`` are looked up: the charge
    rule learns only occurrences that alerted, which are at least the materiality gate's
    ``log(1 + min_impact_pct)`` above their expectation; a smaller bump is no charge it knows.
    """
    kept = bumps.copy()
    _drop_recurring(kept, slots, charge_log)
    return kept


def _drop_recurring(bumps: FloatArray, slots: IntArray, charge_log: float) -> None:
    """:func:`not_recurring` in place."""
    steps, cells = bumps.shape[1], bumps.reshape(-1)  # a copy only if bumps is not contiguous
    # Flat indices throughout: a 2-D nonzero and gathers by pairs of index arrays cost several times more.
    with np.errstate(invalid="ignore"):
        at = np.flatnonzero(cells > charge_log)
    if len(at) == 0:
        return
    columns = at % steps
    earlier = np.take(slots, columns, axis=0)
    before = np.take(cells, (at - columns)[:, None] + np.maximum(earlier, 0))
    with np.errstate(invalid="ignore"):
        recurring = np.any((before >= 0.5 * cells[at][:, None]) & (earlier >= 0), axis=-1)
    bumps[at[recurring] // steps, columns[recurring]] = np.nan


def routine_high(values: FloatArray, timestamps: np.ndarray, decided: IntArray, spec: TailSpec) -> FloatArray:
    """(n, m) the highest cost of each decided column that is no bigger than a routine bump.

    It is the baseline at ``t`` times exp(the ``count``-th largest one-day bump of the days
    ``t - days - 1 .. t - 2``); NaN (no bound) where the history holds fewer than ``count`` bumps or
    the baseline is unknown. A spike must exceed it to alert.
    """
    n, steps = values.shape
    bound = np.full((n, len(decided)), np.nan)
    if spec.count <= 0 or len(decided) == 0 or n == 0:
        return bound
    slots = charge_slots(np.asarray(timestamps))
    slots = slots[:, (slots >= 0).any(axis=0)]  # a lag before the data for every column finds nothing
    rows_per_chunk = max(1, _ROW_CHUNK_ELEMENTS // max(1, steps))
    for first in range(0, n, rows_per_chunk):
        chunk = slice(first, min(n, first + rows_per_chunk))
        bound[chunk] = _routine_high_rows(values[chunk], slots, decided, spec)
    return bound


def _routine_high_rows(values: FloatArray, slots: IntArray, decided: IntArray, spec: TailSpec) -> FloatArray:
    lead = spec.lags * spec.cycle
    # The logs are written after a NaN lead, so the baseline's lagged views need no padded copy.
    padded = np.full((values.shape[0], lead + values.shape[1]), np.nan)
    logs = padded[:, lead:]
    with np.errstate(invalid="ignore"):
        np.log(values, out=logs, where=values > 0)
    baseline = _baseline_of_padded(padded, spec)
    bumps = one_day_bumps(logs, baseline, spec.min_log)
    _drop_recurring(bumps, slots, spec.charge_log)
    bound = np.full((values.shape[0], len(decided)), np.nan)
    tailed = np.flatnonzero(np.count_nonzero(~np.isnan(bumps), axis=1) >= spec.count)
    if len(tailed) == 0:
        return bound
    kth = _kth_largest_bump(bumps, tailed, decided, spec)
    with np.errstate(invalid="ignore"):
        high = baseline[np.ix_(tailed, decided)] + kth
    bound[tailed] = np.where(np.isfinite(high), np.exp(high), np.nan)
    return bound


def _kth_largest_bump(bumps: FloatArray, tailed: IntArray, decided: IntArray, spec: TailSpec) -> FloatArray:
    """(len(tailed), m) the ``count``-th largest bump of the days ``t - days - 1 .. t - 2``; -inf if fewer."""
    lo = int(decided.min())
    # Column c of ``negated`` is minus the bump of day lo - days - 1 + c (+inf where none): the window
    # starting at column t - lo holds the days t - days - 1 .. t - 2 of decided column t. Negated, the
    # k-th largest is the k-th smallest, which np.partition selects ~5x faster than the (days - k)-th;
    # only the days some decided column reads are copied.
    negated = _negated_days(bumps, tailed, lo - spec.days - 1, int(decided.max()) - lo + spec.days)
    if negated.shape[1] == spec.days:  # one decided column: its window is the whole array
        negated.partition(spec.count - 1, axis=-1)
        return -negated[:, spec.count - 1 : spec.count]
    windows = sliding_window_view(negated, spec.days, axis=1)
    step = max(1, _CHUNK_ELEMENTS // max(1, len(tailed) * spec.days))
    kth = np.empty((len(tailed), len(decided)))
    for i in range(0, len(decided), step):
        block = windows[:, decided[i : i + step] - lo]
        block.partition(spec.count - 1, axis=-1)
        np.negative(block[..., spec.count - 1], out=kth[:, i : i + step])
    return kth


def _negated_days(bumps: FloatArray, tailed: IntArray, first_day: int, width: int) -> FloatArray:
    """(len(tailed), width) minus the bumps of days ``first_day ..``: +inf where none (or outside the data)."""
    negated = np.empty((len(tailed), width))
    first, last = max(0, first_day), min(bumps.shape[1], first_day + width)
    start, stop = first - first_day, max(first, last) - first_day
    negated[:, :start], negated[:, stop:] = np.inf, np.inf
    if first < last:
        history = bumps[:, first:last] if len(tailed) == len(bumps) else bumps[tailed, first:last]
        # fmin turns the NaN of a day without a bump into +inf and leaves every negated bump as it is.
        np.fmin(np.negative(history, out=negated[:, start:stop]), np.inf, out=negated[:, start:stop])
    return negated
