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
    nanmedian_last,
)

IntArray = np.ndarray[tuple[int, ...], np.dtype[np.int64]]

_CHUNK_ELEMENTS = 3_000_000
"""Window elements processed at once: bounds peak memory at a few hundred MB."""


@dataclass(frozen=True)
class WindowSpec:
    """Shape of the trailing window for one granularity."""

    cycle: int  # short period in steps (7 for daily, 24 for hourly)
    n_cycles: int  # window length in cycles
    weekly_cycles: int  # cycles per week for a second, weekly season (0 = none)
    level_points: int  # observed points the short level is the median of
    min_points: int  # observed points needed before deciding at all

    @property
    def length(self) -> int:
        return self.cycle * self.n_cycles


@dataclass(frozen=True)
class Forecast:
    """One-step-ahead robust forecast for each (series, decided column), in log dollars."""

    log_expected: FloatArray  # short level + season
    log_expected_long: FloatArray  # long level + season
    log_scale: FloatArray  # robust sigma of the noise (from successive changes)
    zero_share: FloatArray  # share of $0 (or credit) observations in the window
    recent: FloatArray  # (n, m, k) last k deseasonalised values minus the long level
    decidable: BoolArray  # enough observed history to decide


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
        return Forecast(empty, empty, empty, empty, no_recent, empty.astype(bool))
    return Forecast(*(np.concatenate([getattr(p, f) for p in parts], axis=1) for f in Forecast.__dataclass_fields__))


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
    with np.errstate(divide="ignore", invalid="ignore"):
        log_cost = np.where(window > 0, np.log(window), np.nan)
    season, season_held_out = _season(log_cost, spec)
    deseasonalised = log_cost - season
    level_input = _after_rebase(deseasonalised, columns, rebase_at)
    level_valid = ~np.isnan(level_input)
    short_mask = keep_last_valid(level_valid, spec.level_points)
    level = nanmedian_last(np.where(short_mask, level_input, np.nan))
    level_long = nanmedian_last(level_input)
    changes = _successive_changes(log_cost - season_held_out)
    scale = mad_sigma_last(changes - nanmedian_last(changes)[..., None]) / np.sqrt(2.0)
    season_now = season[..., 0]
    n_running = np.count_nonzero(~np.isnan(log_cost), axis=-1)
    decidable = (n_running >= spec.min_points) & np.any(level_valid, axis=-1)
    return Forecast(
        log_expected=level + season_now,
        log_expected_long=level_long + season_now,
        log_scale=scale,
        zero_share=np.count_nonzero(zeros, axis=-1) / np.maximum(np.count_nonzero(observed, axis=-1), 1),
        recent=level_input[..., -recent:] - level_long[..., None],
        decidable=decidable,
    )


def _after_rebase(window: FloatArray, columns: IntArray, rebase_at: IntArray) -> FloatArray:
    """The window with steps before each series' rebase column masked out (for the levels)."""
    length = window.shape[-1]
    positions = columns[None, :, None] - length + np.arange(length)[None, None, :]
    return np.where(positions >= rebase_at[:, None, None], window, np.nan)


def _season(running: FloatArray, spec: WindowSpec) -> tuple[FloatArray, FloatArray]:
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
    weekly, weekly_held_out = _weekly(running - season, spec.cycle * spec.weekly_cycles)
    return season + weekly, season + weekly_held_out


def _weekly(without_short: FloatArray, period: int) -> tuple[FloatArray, FloatArray]:
    """Hour-of-week offsets left after the daily season (weekends, Friday evenings).

    Also returns, for each week, the offsets estimated from the other weeks only.
    """
    lead = without_short.shape[:-1]
    weeks = without_short.reshape(*lead, -1, period)
    week_level = nanmedian_last(weeks)
    deviations = np.swapaxes(weeks - week_level[..., None], -1, -2)
    offsets = _centred(nanmedian_last(deviations))
    fitted = np.broadcast_to(offsets[..., None, :], weeks.shape)
    held_out = np.empty_like(weeks)
    for week in range(weeks.shape[-2]):
        others = np.delete(deviations, week, axis=-1)
        held_out[..., week, :] = _centred(nanmedian_last(others))
    return fitted.reshape(without_short.shape), held_out.reshape(without_short.shape)


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
