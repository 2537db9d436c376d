"""Recurring charges: learnt from the series' own history, or declared by the bill.

A recurring charge is either a fixed amount (a licence) or a share of usage (a support plan, a
commitment true-up: usage doubles, so does the charge). With only totals (the backtest, a source
without ``ChargeFrequency``) both readings are learnt from the same day one billing period and more
earlier (and, on a month's last day, from the earlier last days): monthly, quarterly at any phase,
half-yearly, yearly (:data:`~spendwatch.detect.calendar.CHARGE_PERIODS`). Per period, a majority
of the earlier occurrences that can be judged must have been charges, each judged in hindsight
against the same weekday in the weeks around it (:func:`in_hindsight`): cheaper than the model's
own decision there (a fleet scan of the newest day forecast seven columns for it) and sounder, as
a past day has neighbours on both sides, even in the series' first weeks. The step is judged
against the reading (period, fixed or share, or no charge at all) nearest to it: it is only
surprising if no reading covers it, and a drop only if it falls short of the usage expectation (a
learnt charge that does not come is no drop: it may have been one-off, a spike at the same date half
a year earlier, or February's last day read as the 28th-30th of a later month). The first occurrence
of a charge cannot be known from totals and alerts.

Where the bill says which lines are recurring (FOCUS ``ChargeFrequency = Recurring``), those
dollars are *declared*: they are taken out of the usage model and expected at their own earlier
size at the same calendar slot (the occurrence nearest in size among the periods that had one);
the first one is its own expectation (the bill says it recurs), a bigger one than before alerts.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from spendwatch.detect.calendar import CHARGE_PERIODS, month_ends_months_earlier, same_day_months_earlier
from spendwatch.detect.robust import BoolArray, FloatArray, mad_sigma_last, nanmedian_last
from spendwatch.detect.scoring import Thresholds
from spendwatch.detect.seasonal import IntArray


def charge_lookups(timestamps: np.ndarray, decided: IntArray, months: int) -> list[IntArray]:
    """Per decided column, the columns of the same day (and same month end) one billing period
    and more earlier: one (n_decided, lags) array per period and matching, -1 = before the data.
    ``months`` is how many previous months a monthly charge is learnt from (0 = no charges)."""
    if months <= 0 or len(decided) == 0:
        return []
    lookups = []
    for lags in (tuple(range(1, months + 1)), *CHARGE_PERIODS[1:]):
        lookups.append(same_day_months_earlier(timestamps, lags)[decided])
        lookups.append(month_ends_months_earlier(timestamps, lags)[decided])
    return lookups


NEIGHBOUR_WEEKS = 4
"""Weeks on each side of an earlier occurrence whose same weekday is its baseline (eight days at most)."""

MIN_NEIGHBOURS = 3
"""Running neighbours an earlier occurrence needs before it is evidence either way."""

REACH = 7 * NEIGHBOUR_WEEKS + 1
"""Columns after an earlier occurrence its judgement reads (the day after it, and that day's last neighbour)."""


def learnt_log_ratio(
    panel: FloatArray, earlier: list[IntArray], decided: IntArray, log_expected: FloatArray, limits: Thresholds
) -> FloatArray:
    """Log ratio a learnt calendar charge adds at each decided column (0 = none).

    ``log_expected`` is the usage forecast of the decided columns; each earlier occurrence is judged
    in hindsight against its own neighbours (:func:`in_hindsight`), not by the model's decision there.
    """
    if not earlier:
        return np.zeros_like(log_expected)
    readings = np.stack(
        [reading for past in _judged_once(panel, earlier, decided, limits) for reading in _readings(past, log_expected)]
    )
    # "No charge" is a reading too: a learnt charge that does not come is no drop (it may have been
    # one-off: a spike at the same date half a year ago, February's last day read as a later 29th).
    highest = np.max(np.where(readings > 0, readings, 0.0), axis=0)
    # On a billing day whose quarterly slots all precede the series' data, a first quarterly charge
    # billed with the learnt one cannot be told from a spike: up to a quarter's worth on top is a reading.
    first_quarter = (highest > 0) & quarter_unseen(panel, earlier, history_cut=limits.history_cut)
    highest[first_quarter] = np.log1p(FIRST_QUARTER_CHARGES * np.expm1(highest[first_quarter]))
    with np.errstate(divide="ignore", invalid="ignore"):
        observed = panel[:, decided]
        actual = np.where(observed > 0, np.log(observed) - log_expected, -np.inf)
    return np.asarray(np.clip(np.nan_to_num(actual, nan=-np.inf), 0.0, highest), dtype=np.float64)


QUARTERLY = 1
"""Index of the quarterly period in :data:`~spendwatch.detect.calendar.CHARGE_PERIODS` (and of its pair
of look-ups in :func:`charge_lookups`' list: the same day, the same month end)."""


FIRST_QUARTER_CHARGES = 5.0
"""On a billing day in a series' first quarter, the learnt charge and a first quarterly one on top of it
of up to four times its size pass: a quarter's worth (three) and one more for the quarter's growth. A
bigger amount there still alerts: a first true-up explains a few charges' worth, not any amount."""


def quarter_unseen(panel: FloatArray, earlier: list[IntArray], *, history_cut: bool = False) -> BoolArray:
    """(n, n_decided) whether every quarterly slot of the decided column (3, 6, 9 months earlier, the
    same day or month end) precedes the series' first running day: no quarterly charge could have been
    billed there yet, so the decided column may carry the first one.

    A billing day (one with a learnt charge) is where a vendor bills, and a quarterly true-up or
    support charge is billed on the same day as the monthly one (public-v2: 2025-03-01 and 03-15,
    2-4.5x the monthly charge on top of it). Its first occurrence is unknowable from totals, as any
    first charge is; but on a day already known to bill, it is the likeliest reading of a bigger
    amount, while a spike is no likelier there than on any other day. After a quarter of data every
    quarterly phase of the slot has been seen once and judged (:func:`in_hindsight`), and a bigger
    amount than every learnt one alerts again. Causal: a slot precedes the decided column, so
    "the first running day is after it" reads columns before the decided one only.

    ``history_cut``: the panel's first column is not the data's (the daemon reads ``detection.history``
    of a store that holds more), so a series running from that column may have run before it: its
    quarterly slots count as seen, and only a series that starts inside the panel has a first quarter.
    """
    running = panel > 0
    first = np.where(running.any(axis=1), np.argmax(running, axis=1), panel.shape[1])
    if history_cut:
        first = np.where(first == 0, np.iinfo(np.int64).min, first)
    first = first[:, None, None]
    same_day, month_end = earlier[2 * QUARTERLY], earlier[2 * QUARTERLY + 1]
    seen = np.any(same_day[None] >= first, axis=-1) | np.any(month_end[None] >= first, axis=-1)
    return np.asarray(~seen, dtype=bool)


def _judged_once(
    panel: FloatArray, earlier: list[IntArray], decided: IntArray, limits: Thresholds
) -> list[Occurrences]:
    """:func:`in_hindsight` of every look-up in ``earlier``, each earlier column judged once where it can be.

    A slot whose whole neighbourhood (:data:`REACH` columns after it) lies before the decided column is
    judged the same for every decided column: once per distinct column (the periods share slots, and a
    backtest reads each day from ~20 later ones). Only slots nearer the decided column (a 28-day
    February) are judged per decided column, with its cut-off.
    """
    slots = np.concatenate(earlier, axis=1)
    shape = (panel.shape[0], *slots.shape)
    whole = Occurrences(
        judged=np.zeros(shape, dtype=bool),
        charged=np.zeros(shape, dtype=bool),
        log_ratio=np.full(shape, np.nan),
        excess=np.full(shape, np.nan),
    )
    far = (slots >= 0) & (slots + REACH < decided[:, None])
    columns, where = np.unique(slots[far], return_inverse=True)
    once = in_hindsight(panel, columns[None, :], np.array([panel.shape[1]]), limits)
    near_rows, near_slots = np.nonzero((slots >= 0) & ~far)
    alone = in_hindsight(panel, slots[near_rows, near_slots][:, None], decided[near_rows], limits)
    for field in Occurrences.__dataclass_fields__:
        target = getattr(whole, field)
        target[:, far] = getattr(once, field)[:, 0, where.reshape(-1)]
        target[:, near_rows, near_slots] = getattr(alone, field)[..., 0]
    bounds = np.cumsum([0] + [lags.shape[1] for lags in earlier])
    return [
        Occurrences(*(getattr(whole, field)[..., lo:hi] for field in Occurrences.__dataclass_fields__))
        for lo, hi in pairwise(bounds)
    ]


@dataclass(frozen=True)
class Occurrences:
    """Earlier occurrences of a calendar slot, judged in hindsight; arrays are (n, n_decided, lags)."""

    judged: BoolArray  # the cost is known and enough running neighbours surround it
    charged: BoolArray  # ... and it stood out of them: a charge was billed that day
    log_ratio: FloatArray  # log(cost / neighbours' median), NaN where not positive
    excess: FloatArray  # cost - neighbours' median, in dollars


def in_hindsight(panel: FloatArray, lags: IntArray, decided: IntArray, limits: Thresholds) -> Occurrences:
    """Whether a charge was billed at each earlier slot ``lags`` (-1 = before the data).

    An earlier day is in the past of the decided column, so it can be judged with hindsight: against
    the same weekday up to :data:`NEIGHBOUR_WEEKS` weeks before *and after* it (only days before the
    decided column), which no ramp or warm-up around it can mislead as a one-sided forecast can. It
    was a charge where it exceeds their median by the materiality (``min_pct``, ``min_abs``) and by
    ``spread_z`` robust sigmas of their spread (the bar an intermittent job's run is held to: a noisy
    series needs a bigger charge), and the days either side of it did not: a charge is billed on one
    day, a multi-day rise is usage (a shift, a busy week). A day of a job that did not run is no
    charge; one with fewer than :data:`MIN_NEIGHBOURS` running neighbours is no evidence either way.
    """
    judged, charged, log_ratio, excess = _stands_out(panel, lags, decided, limits)
    # Only a day that stood out can be cleared by its neighbours: the others are not looked at.
    rows, at, lag = np.nonzero(charged)
    if len(rows):
        slot, before = np.broadcast_to(lags, charged.shape[1:])[at, lag], decided[at]
        beside = [_stands_out_cells(panel, rows, slot + side, before, limits) for side in (-1, 1)]
        charged[rows, at, lag] = ~(beside[0] | beside[1])
    return Occurrences(judged, charged, log_ratio, excess)


_OFFSETS = 7 * np.concatenate([np.arange(-NEIGHBOUR_WEEKS, 0), np.arange(1, NEIGHBOUR_WEEKS + 1)])
"""Days from an occurrence to its neighbours: the same weekday in the weeks before and after it."""


def _stands_out(
    panel: FloatArray, days: IntArray, decided: IntArray, limits: Thresholds
) -> tuple[BoolArray, BoolArray, FloatArray, FloatArray]:
    """(judged, stands out, log ratio, excess) of each day in ``days`` against its same-weekday neighbours;
    only columns before the decided one are read (a day at or after it, or -1, is not judged)."""
    known, readable, around, day = _neighbourhood(days, decided[:, None], panel.shape[1])
    then = np.where(known, panel[:, day], np.nan)
    return _judge(panel[:, around], readable, then, limits)


def _stands_out_cells(
    panel: FloatArray, rows: IntArray, days: IntArray, before: IntArray, limits: Thresholds
) -> BoolArray:
    """:func:`_stands_out`'s "stands out" of single cells: row ``rows[i]``, day ``days[i]``, decided ``before[i]``."""
    known, readable, around, day = _neighbourhood(days, before, panel.shape[1])
    then = np.where(known, panel[rows, day], np.nan)
    return _judge(panel[rows[:, None], around], readable, then, limits)[1]


def _neighbourhood(days: IntArray, before: IntArray, n_steps: int) -> tuple[BoolArray, BoolArray, IntArray, IntArray]:
    """(known, readable, neighbour columns, day column) of ``days``; only columns before ``before`` are readable.

    The columns are clipped into the panel, so they can index it; ``known`` and ``readable`` say which to use.
    """
    known = (days >= 0) & (days < before)
    around = days[..., None] + _OFFSETS
    readable = known[..., None] & (around >= 0) & (around < before[..., None])
    return known, readable, np.clip(around, 0, n_steps - 1), np.clip(days, 0, n_steps - 1)


def _judge(
    costs: FloatArray, readable: BoolArray, then: FloatArray, limits: Thresholds
) -> tuple[BoolArray, BoolArray, FloatArray, FloatArray]:
    """(judged, stands out, log ratio, excess) of the costs ``then`` against their neighbours' ``costs``."""
    with np.errstate(invalid="ignore", divide="ignore"):
        logs = np.log(np.where(readable & (costs > 0), costs, np.nan))
        centre = nanmedian_last(logs)
        spread = np.fmax(mad_sigma_last(logs - centre[..., None]), limits.scale_floor_pct)
        log_ratio = np.where(then > 0, np.log(then) - centre, np.nan)
        excess = then - np.exp(centre)
        judged = (np.count_nonzero(~np.isnan(logs), axis=-1) >= MIN_NEIGHBOURS) & ~np.isnan(then)
        stands_out = (
            judged
            & (log_ratio > np.fmax(np.log1p(limits.min_pct), limits.spread_z * spread))
            & (excess >= limits.min_abs)
        )
    return judged, np.asarray(stands_out, dtype=bool), log_ratio, excess


def _readings(past: Occurrences, log_expected: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Log ratios of the "share of usage" and "fixed amount" readings of past charges (0 = none).

    Each is the median of the past amounts where a majority of the earlier occurrences judged were
    charges; elsewhere both readings are 0, so only those cells are computed.
    """
    n_hits = past.charged.sum(axis=-1)
    recurring = (n_hits >= 1) & (2 * n_hits >= past.judged.sum(axis=-1))
    ratio, as_fixed_amount = np.zeros(recurring.shape), np.zeros(recurring.shape)
    cells = np.nonzero(recurring)
    if len(cells[0]) == 0:
        return ratio, as_fixed_amount
    charged = past.charged[cells]
    ratio[cells] = np.nan_to_num(nanmedian_last(np.where(charged, past.log_ratio[cells], np.nan)), nan=0.0)
    dollars = np.nan_to_num(nanmedian_last(np.where(charged, past.excess[cells], np.nan)), nan=0.0)
    with np.errstate(invalid="ignore", over="ignore"):
        as_fixed_amount[cells] = np.nan_to_num(np.log1p(dollars / np.exp(log_expected[cells])), nan=0.0)
    return ratio, as_fixed_amount


def declared_expectation(declared: FloatArray, earlier: list[IntArray], decided: IntArray) -> FloatArray:
    """$ a declared recurring charge is expected to cost at each decided column.

    Per billing period, the median of the earlier declared amounts at its slots; of those, the one
    nearest the current amount (a monthly fee and a yearly renewal can share a day). Without any
    earlier occurrence (the first one, or hourly data) the charge is its own expectation.
    """
    current = np.nan_to_num(declared[:, decided])
    if not earlier:
        return current
    per_period = []
    for lags in earlier:
        amounts = np.where(lags >= 0, declared[:, np.maximum(lags, 0)], np.nan)
        per_period.append(nanmedian_last(np.where(amounts > 0, amounts, np.nan)))
    candidates = np.stack(per_period)
    distance = np.where(np.isnan(candidates), np.inf, np.abs(candidates - current[None]))
    nearest = np.take_along_axis(candidates, np.argmin(distance, axis=0)[None], axis=0)[0]
    return np.where(np.isnan(nearest), current, nearest)


def with_declared(learnt: FloatArray, log_expected: FloatArray, declared: FloatArray) -> FloatArray:
    """The log ratio that adds the declared charges' expected dollars to the usage expectation."""
    usage = np.exp(log_expected + learnt)
    with np.errstate(invalid="ignore", divide="ignore"):
        total = np.log(usage + declared) - log_expected
    return np.asarray(np.where(declared > 0, total, learnt), dtype=np.float64)
