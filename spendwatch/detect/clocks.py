"""Which clock an hourly series keeps: UTC, or the local time of some zone through its DST changes.

A team in New York starts its notebooks at 09:00 New York time: 14:00 UTC in winter, 13:00 UTC
after the second Sunday of March. A model that indexes the hours of the day in UTC sees the whole
working day move one hour and, until its 21-day season has re-learnt, flags the new first hour as a
burst and the old last hour as a drop, every day, for two to three weeks.

So for every candidate zone whose UTC offset changes inside the data, the panel is also laid out on
that zone's *local* hour grid (:func:`local_grid`): the skipped hour of spring is a gap, the
repeated hour of autumn holds the mean of its two costs. On that grid a local-clock series has the
same pattern before and after the change, and the unchanged model decomposes it correctly.

Which clock explains a series is a model comparison on its own history (:func:`clock_advantage`):
each hour after a change is compared with the same hour one, two and three weeks earlier, before
the change, paired either by UTC hour or by local hour. The clock whose pairs differ less (mean
absolute log difference, each pair capped at ``log 2``) explains the series better. Pairs that do
not straddle a change are the same under both clocks and carry no evidence. Everything is computed
from hours strictly before the decided one, so the choice is as causal as the rest of the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

from spendwatch.detect.robust import BoolArray, FloatArray
from spendwatch.detect.scoring import Decision
from spendwatch.detect.seasonal import IntArray

COMMON_ZONES: tuple[str, ...] = (
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Los_Angeles",
    "America/Sao_Paulo",
    "Europe/London",
    "Europe/Berlin",
    "Asia/Kolkata",
    "Asia/Singapore",
    "Asia/Tokyo",
    "Australia/Sydney",
    "Pacific/Auckland",
)
"""Business zones every hourly series is tried against, besides the configured ones."""

WEEK = 168
PAIR_CAP = float(np.log(2.0))
"""Largest absolute log difference one pair contributes: a genuine anomaly in one hour of a pair
should count as one plain miss, not decide the comparison."""


@dataclass(frozen=True)
class LocalClock:
    """A zone's local hour grid over a panel's columns: column ``t`` is local hour ``t + shift[t]``."""

    zone: str
    shift: IntArray  # (n_steps,) hours the zone's UTC offset has gained since the first column

    @property
    def local_index(self) -> IntArray:
        return np.arange(len(self.shift), dtype=np.int64) + self.shift


def check_zone(name: str) -> str:
    """``name`` if it is an IANA zone this system knows, else ValueError."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (use an IANA name such as Europe/Berlin)") from None
    return name


def local_clocks(timestamps: np.ndarray, zones: Sequence[str]) -> list[LocalClock]:
    """The candidate zones whose offset changes (by whole hours) within ``timestamps``.

    A zone with a constant offset over the panel has the UTC grid shifted by a constant, which
    the model cannot tell from UTC, and zones with the same changes at the same instants (London
    and Berlin) are one clock; the first of each group in ``zones`` order is kept.
    """
    if len(timestamps) < 2:
        return []
    utc = pd.DatetimeIndex(np.asarray(timestamps).astype("datetime64[ns]"), tz="UTC")
    naive = utc.tz_localize(None)
    found: list[LocalClock] = []
    seen: set[bytes] = set()
    for zone in dict.fromkeys(zones):
        offset = (utc.tz_convert(zone).tz_localize(None) - naive).total_seconds().to_numpy()
        change = offset - offset[0]
        if not change.any() or np.any(change % 3600):
            continue
        shift = (change // 3600).astype(np.int64)
        if (key := shift.tobytes()) not in seen:
            seen.add(key)
            found.append(LocalClock(zone, shift))
    return found


def local_grid(values: FloatArray, clock: LocalClock) -> FloatArray:
    """``values`` (n_series, n_steps) laid out on the zone's local hours.

    The hour skipped in spring is NaN (a gap); the hour repeated in autumn holds the mean of
    its two costs. Columns before the first one's local hour do not exist: local hour ``k`` of
    the grid is column ``k`` of the result.
    """
    index = clock.local_index
    width = int(index.max()) + 1
    total = np.zeros((values.shape[0], width))
    count = np.zeros((values.shape[0], width))
    observed = ~np.isnan(values)
    np.add.at(total.T, index, np.where(observed, values, 0.0).T)
    np.add.at(count.T, index, observed.T.astype(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def clock_advantage(
    values: FloatArray, grid: FloatArray, clock: LocalClock, decided: IntArray, window: int
) -> FloatArray:
    """How much better the zone's local hours than UTC hours explain each decided column's window.

    Mean over straddling pairs (an hour inside the window and the same hour 1-3 weeks earlier,
    also inside the window, on the other side of a change) of the capped absolute log difference
    paired by UTC hour minus the same paired by local hour. Positive: the local clock explains
    better. NaN where no pair straddles a change (both clocks are the same model there).
    """
    n_series, n_steps = values.shape
    with np.errstate(divide="ignore", invalid="ignore"):
        log_utc = np.where(values > 0, np.log(values), np.nan)
        log_local = np.where(grid > 0, np.log(grid), np.nan)
    local = clock.local_index
    total = np.zeros((n_series, len(decided)))
    pairs = np.zeros((n_series, len(decided)))
    for weeks in (1, 2, 3):
        lag = weeks * WEEK
        if lag >= window or lag >= n_steps:
            break
        hours = np.arange(lag, n_steps)
        straddle = clock.shift[hours] != clock.shift[hours - lag]
        earlier_local = local[hours] - lag
        by_utc = np.fmin(np.abs(log_utc[:, hours] - log_utc[:, hours - lag]), PAIR_CAP)
        usable = earlier_local >= 0
        by_local = np.full_like(by_utc, np.nan)
        by_local[:, usable] = np.fmin(np.abs(log_utc[:, hours[usable]] - log_local[:, earlier_local[usable]]), PAIR_CAP)
        valid = straddle[None, :] & ~np.isnan(by_utc) & ~np.isnan(by_local)
        difference = np.where(valid, by_utc - by_local, 0.0)
        # Prefix sums over the later hours h = lag .. n_steps - 1: a decided column t uses pairs
        # with h in [t - window + lag, t), so that the earlier hour h - lag is inside its window.
        cumulative = np.concatenate([np.zeros((n_series, 1)), np.cumsum(difference, axis=1)], axis=1)
        counted = np.concatenate([np.zeros((n_series, 1)), np.cumsum(valid, axis=1)], axis=1)
        high = np.clip(decided - lag, 0, n_steps - lag)
        low = np.minimum(np.clip(decided - window, 0, None), high)
        total += cumulative[:, high] - cumulative[:, low]
        pairs += counted[:, high] - counted[:, low]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, total / pairs, np.nan)


@dataclass(frozen=True)
class ClockChoice:
    """Per (series, decided column): which candidate clock wins, and how clearly."""

    best: np.ndarray  # index into the clocks, -1 where no clock has evidence (UTC, exactly)
    local: BoolArray  # the local clock explains the window better by more than the gate
    unsure: BoolArray  # evidence exists but neither clock wins by the gate: both must alert


def changed_within(clock: LocalClock, decided: IntArray, window: int) -> BoolArray:
    """Whether the zone's offset changed between the start of each decided column's window and it."""
    return np.asarray(clock.shift[decided] != clock.shift[np.maximum(decided - window, 0)], dtype=bool)


def choose_clock(advantages: list[FloatArray], changed: list[BoolArray], noise: FloatArray, gate: float) -> ClockChoice:
    """The clock per cell: the zone with the largest advantage if it beats UTC by ``gate`` noise
    sigmas; unsure (both must alert) where it does not, or where a zone changed its offset inside
    the window but no hour after the change can be compared yet."""
    stacked = np.stack(advantages)
    has_evidence = ~np.isnan(stacked)
    candidate = has_evidence | np.stack(changed)[:, None, :]
    best = np.argmax(np.where(has_evidence, stacked, np.where(candidate, -1e9, -np.inf)), axis=0)
    best_advantage = np.take_along_axis(stacked, best[None], axis=0)[0]
    considered = candidate.any(axis=0)
    margin = gate * noise
    with np.errstate(invalid="ignore"):
        local = considered & (best_advantage > margin)
        unsure = considered & ~local & ~(best_advantage < -margin)
    return ClockChoice(np.where(considered, best, -1), np.asarray(local, dtype=bool), np.asarray(unsure, dtype=bool))


def merge_local(
    utc: Decision, local: Decision, rows: IntArray, columns: IntArray, take: BoolArray, both: BoolArray
) -> None:
    """Write ``local``'s decisions (computed for ``rows`` x ``columns``) into ``utc`` in place:
    all of it where ``take``, and only agreement (alert or drop under both clocks) where ``both``."""
    cells = np.ix_(rows, columns)
    for name in ("expected", "lower", "upper", "score", "log_ratio", "excess", "kind"):
        target = getattr(utc, name)
        target[cells] = np.where(take, getattr(local, name), target[cells])
    for name in ("is_anomaly", "is_drop"):
        target = getattr(utc, name)
        mine = getattr(local, name)
        target[cells] = np.where(take, mine, np.where(both, target[cells] & mine, target[cells]))
    utc.kind[cells] = np.where(both & ~utc.is_anomaly[cells] & ~utc.is_drop[cells], 0, utc.kind[cells])
