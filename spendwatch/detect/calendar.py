"""Calendar look-ups on the column timestamps: the same day of the month some months earlier."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from spendwatch.detect.seasonal import IntArray

CHARGE_PERIODS: tuple[tuple[int, ...], ...] = ((1, 2, 3), (3, 6, 9), (6, 12), (12, 24))
"""Months back at which a recurring charge is looked up, one tuple per billing period: monthly
(the three previous months), quarterly (any phase), half-yearly and yearly renewals."""


def same_day_months_earlier(timestamps: np.ndarray, lags: Sequence[int]) -> IntArray:
    """Column index of the same day of the month ``lag`` months earlier, -1 if before the data.

    Returns shape (n_steps, len(lags)). A day that the earlier month lacks (the 31st, Feb 30th)
    maps to that month's last day: a charge billed "on the 31st" lands on the 30th in a 30-day
    month. Columns must be consecutive days starting at ``timestamps[0]``.
    """
    days = timestamps.astype("datetime64[D]")
    month_start = days.astype("datetime64[M]")
    day_of_month = (days - month_start.astype("datetime64[D]")).astype(np.int64)
    earlier_month = month_start[:, None] - np.asarray(lags, dtype=np.int64)[None, :]
    earlier_start = earlier_month.astype("datetime64[D]")
    earlier_length = ((earlier_month + 1).astype("datetime64[D]") - earlier_start).astype(np.int64)
    target = earlier_start + np.minimum(day_of_month[:, None], earlier_length - 1)
    index = (target - days[0]).astype(np.int64)
    return np.where(index >= 0, index, -1)


def month_ends_months_earlier(timestamps: np.ndarray, lags: Sequence[int]) -> IntArray:
    """For the last day of a month, the last day of the month ``lag`` months earlier; else -1.

    A charge "on the last day" falls on the 28th-31st; matching by day number alone misses it
    every time the month lengths differ.
    """
    days = timestamps.astype("datetime64[D]")
    month_start = days.astype("datetime64[M]")
    is_month_end = (days + 1).astype("datetime64[M]") != month_start
    earlier_end = (month_start[:, None] - np.asarray(lags, dtype=np.int64)[None, :] + 1).astype("datetime64[D]") - 1
    index = (earlier_end - days[0]).astype(np.int64)
    return np.where(is_month_end[:, None] & (index >= 0), index, -1)


def same_day_previous_months(timestamps: np.ndarray, months: int) -> IntArray:
    """:func:`same_day_months_earlier` for the ``months`` previous months."""
    return same_day_months_earlier(timestamps, range(1, months + 1))
