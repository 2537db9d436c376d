"""Calendar look-ups on the column timestamps: the same day of the month in earlier months."""

from __future__ import annotations

import numpy as np

from spendwatch.detect.seasonal import IntArray


def same_day_previous_months(timestamps: np.ndarray, months: int) -> IntArray:
    """Column index of the same day of the month ``1..months`` months earlier, -1 if before the data.

    Returns shape (n_steps, months). A day that the earlier month lacks (the 31st, Feb 30th)
    maps to that month's last day: a charge billed "on the 31st" lands on the 30th in a 30-day
    month. Columns must be consecutive days starting at ``timestamps[0]``.
    """
    days = timestamps.astype("datetime64[D]")
    month_start = days.astype("datetime64[M]")
    day_of_month = (days - month_start.astype("datetime64[D]")).astype(np.int64)
    lags = np.arange(1, months + 1)
    earlier_month = month_start[:, None] - lags[None, :]
    earlier_start = earlier_month.astype("datetime64[D]")
    earlier_length = ((earlier_month + 1).astype("datetime64[D]") - earlier_start).astype(np.int64)
    target = earlier_start + np.minimum(day_of_month[:, None], earlier_length - 1)
    index = (target - days[0]).astype(np.int64)
    return np.where(index >= 0, index, -1)


def month_ends_previous_months(timestamps: np.ndarray, months: int) -> IntArray:
    """For the last day of a month, the last days of the ``months`` earlier months; else -1.

    A charge "on the last day" falls on the 28th-31st; matching by day number alone misses it
    every time the month lengths differ.
    """
    days = timestamps.astype("datetime64[D]")
    month_start = days.astype("datetime64[M]")
    is_month_end = (days + 1).astype("datetime64[M]") != month_start
    lags = np.arange(0, months)
    earlier_end = (month_start[:, None] - lags[None, :]).astype("datetime64[D]") - 1
    index = (earlier_end - days[0]).astype(np.int64)
    return np.where(is_month_end[:, None] & (index >= 0), index, -1)
