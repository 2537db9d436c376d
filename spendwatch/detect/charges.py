"""Recurring charges: learnt from the series' own history, or declared by the bill.

A recurring charge is either a fixed amount (a licence) or a share of usage (a support plan, a
commitment true-up: usage doubles, so does the charge). With only totals (the backtest, a source
without ``ChargeFrequency``) both readings are learnt from the same day one billing period and more
earlier (and, on a month's last day, from the earlier last days): monthly, quarterly at any phase,
half-yearly, yearly (:data:`~spendwatch.detect.calendar.CHARGE_PERIODS`). Per period the base
model's own decisions there are looked up: a majority of the earlier occurrences it could decide
must have alerted. The step is judged against the reading (period, fixed or share) nearest to it:
it is only surprising if no reading covers it, and a drop only if it falls short of every one (a
share of usage learnt on a quiet day can overstate a fixed fee). The first occurrence of a charge
cannot be known from totals and alerts.

Where the bill says which lines are recurring (FOCUS ``ChargeFrequency = Recurring``), those
dollars are *declared*: they are taken out of the usage model and expected at their own earlier
size at the same calendar slot (the occurrence nearest in size among the periods that had one);
the first one is its own expectation (the bill says it recurs), a bigger one than before alerts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spendwatch.detect.calendar import CHARGE_PERIODS, month_ends_months_earlier, same_day_months_earlier
from spendwatch.detect.robust import BoolArray, FloatArray, nanmedian_last, nanquantile_last
from spendwatch.detect.scoring import Decision, Thresholds, decide
from spendwatch.detect.seasonal import USUAL_QUANTILE, Forecast, IntArray


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


def learnt_log_ratio(
    panel: FloatArray,
    columns: IntArray,
    everything: Forecast,
    earlier: list[IntArray],
    decided: IntArray,
    limits: Thresholds,
    warm_up_points: int = 0,
) -> FloatArray:
    """Log ratio a learnt calendar charge adds at each decided column (0 = none).

    ``everything`` is the forecast of ``columns`` (the decided ones and the ones ``earlier``
    points at); the base decisions there, without any charge, say where charges happened.
    """
    log_expected = everything.log_expected[:, np.searchsorted(columns, decided)]
    if not earlier:
        return np.zeros_like(log_expected)
    past = decide(panel[:, columns], everything, np.zeros((panel.shape[0], len(columns))), limits)
    lookup = np.full(panel.shape[1], -1, dtype=np.int64)
    lookup[columns] = np.arange(len(columns))
    now = np.searchsorted(columns, decided)
    warm = WarmUp.of(panel, warm_up_points)
    readings = np.stack(
        [
            reading
            for lags in earlier
            for reading in _readings(
                past,
                np.where(lags >= 0, lookup[np.maximum(lags, 0)], -1),
                _warm_up(panel, lags, past, now, warm, decided),
                log_expected,
            )
        ]
    )
    learnt = readings > 0
    lowest = np.min(np.where(learnt, readings, np.inf), axis=0)
    highest = np.max(np.where(learnt, readings, -np.inf), axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        observed = panel[:, decided]
        actual = np.where(observed > 0, np.log(observed) - log_expected, -np.inf)
    nearest = np.clip(np.nan_to_num(actual, nan=-np.inf), lowest, highest)
    return np.asarray(np.where(learnt.any(axis=0), nearest, 0.0), dtype=np.float64)


_ROWS = 20_000
"""Series per chunk when finding the warm-ups (bounds the running count's memory in a fleet scan)."""


@dataclass(frozen=True)
class WarmUp:
    """Each series' warm-up: its first ``points`` running (positive) steps, which the model cannot decide."""

    end: IntArray  # (n,) the column of the last warm-up step: later columns have ``points`` before them
    costs: FloatArray  # (n, points) the warm-up's costs, NaN-padded where a series has fewer

    @classmethod
    def of(cls, panel: FloatArray, points: int) -> WarmUp:
        n_series, n_steps = panel.shape
        end = np.full(n_series, n_steps, dtype=np.int64)
        costs = np.full((n_series, max(points, 0)), np.nan)
        for first in range(0, n_series if points > 0 else 0, _ROWS):
            block = panel[first : first + _ROWS]
            positive = np.nan_to_num(block) > 0
            rank = np.cumsum(positive, axis=1, dtype=np.int32)
            rows, columns = np.nonzero(positive & (rank <= points))
            costs[first + rows, rank[rows, columns] - 1] = block[rows, columns]
            full = rank[:, -1] >= points
            end[first : first + len(block)][full] = np.argmax(rank[full] >= points, axis=1)
        return cls(end, costs)


def _warm_up(
    panel: FloatArray, lags: IntArray, past: Decision, now: IntArray, warm: WarmUp, decided: IntArray
) -> _WarmUp:
    """Earlier occurrences in the series' warm-up (fewer than ``min_history`` running steps before
    them, so the model could not decide them: a yearly renewal or quarterly true-up on the data's
    first days). With no model then, such an occurrence is a charge if it stands out of the
    warm-up's routine high (its USUAL_QUANTILE cost: every weekday is in it, so a busy weekday is
    not a charge) by the factor that alerts today (``upper / expected`` of the decided column: the
    z and the materiality); its size is read against the warm-up's median cost. Without this the
    second renewal of a charge first seen in the warm-up alerts."""
    # A series with no warm-up yet: NaN, no evidence. (np.nanquantile took these rows one by one in
    # Python: ~70% of a daily fleet scan; nanquantile_last gives the same bits in one sort.)
    usual = nanmedian_last(warm.costs)[:, None, None]
    routine_high = nanquantile_last(warm.costs, USUAL_QUANTILE)[:, None, None]
    index = np.maximum(lags, 0)
    # Causal: only a warm-up complete before the decided column (its costs all lie before it).
    complete = warm.end[:, None, None] < decided[None, :, None]
    in_warm_up = (lags >= 0)[None] & (index[None] <= warm.end[:, None, None]) & complete
    with np.errstate(invalid="ignore"):
        then = np.where(in_warm_up, panel[:, index], np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        factor = (past.upper[:, now] / past.expected[:, now])[..., None]
        ratio = np.where(then > 0, np.log(then / usual), np.nan)
        alerted = then > routine_high * factor
        started = then > 0  # a $0 in the warm-up is a series that had not started yet: no evidence
    return _WarmUp(ratio, then - usual, np.asarray(alerted, dtype=bool), np.asarray(started, dtype=bool))


@dataclass(frozen=True)
class _WarmUp:
    ratio: FloatArray  # (n, n_decided, lags) log ratio of the earlier occurrence to the warm-up median
    dollars: FloatArray  # ... and its $ over it
    alerted: BoolArray  # ... it stands out of the warm-up by today's alerting factor
    observed: BoolArray  # ... it was a positive cost (counts as evidence)


def _readings(past: Decision, slot: IntArray, warm: _WarmUp, log_expected: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Log ratios of the "share of usage" and "fixed amount" readings of past charges (0 = none)."""
    ratio = _from_history(past.log_ratio, past.is_anomaly, past.decided, slot, warm.ratio, warm)
    dollars = _from_history(past.excess, past.is_anomaly, past.decided, slot, warm.dollars, warm)
    with np.errstate(invalid="ignore", over="ignore"):
        as_fixed_amount = np.log1p(dollars / np.exp(log_expected))
    return np.nan_to_num(ratio, nan=0.0), np.nan_to_num(as_fixed_amount, nan=0.0)


def _from_history(
    amounts: FloatArray, alerted: BoolArray, decided: BoolArray, slot: IntArray, warm_amounts: FloatArray, warm: _WarmUp
) -> FloatArray:
    """Median of past amounts where a majority of the earlier occurrences alerted. An occurrence
    the model decided is read from its decision; one in the series' warm-up, before it had enough
    history, counts only where it stands out of the warm-up (:func:`_warm_up`)."""
    index = np.maximum(slot, 0)
    in_data = (slot >= 0)[None, :, :]
    was_decided = in_data & decided[:, index]
    # A warm-up occurrence is judged coarsely (no season, no noise model yet): one that stands out
    # is evidence of a charge; one that does not is no evidence either way, as before the rule.
    warm_hit = in_data & ~decided[:, index] & warm.observed & warm.alerted
    available = was_decided | warm_hit
    hits = (alerted[:, index] & was_decided) | warm_hit
    n_hits = hits.sum(axis=-1)
    n_available = available.sum(axis=-1)
    recurring = (n_hits >= 1) & (2 * n_hits >= n_available)
    values = np.where(was_decided, amounts[:, index], warm_amounts)
    median = nanmedian_last(np.where(hits & recurring[..., None], values, np.nan))
    return np.nan_to_num(median, nan=0.0)


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
