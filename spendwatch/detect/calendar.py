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
