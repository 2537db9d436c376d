"""Calendar look-ups on the column timestamps: same day-of-month in earlier months."""

from __future__ import annotations

import numpy as np

from spendwatch.detect.seasonal import IntArray


def same_day_previous_months(timestamps: np.ndarray, months: int) -> IntArray:
    """Column index of the same day-of-month ``1..months`` months earlier, -1 if absent.

    Returns shape (n_steps, months). Daily columns only: "the 31st" has no match in a
    30-day month, and a date before the first column has none either.
    """
    days = timestamps.astype("datetime64[D]")
    month_start = days.astype("datetime64[M]")
    day_of_month = (days - month_start.astype("datetime64[D]")).astype(np.int64)
    lags = np.arange(1, months + 1)
    earlier_month = month_start[:, None] - lags[None, :]
    target = earlier_month.astype("datetime64[D]") + day_of_month[:, None]
    in_month = target.astype("datetime64[M]") == earlier_month
    index = (target - days[0]).astype(np.int64)
    found = in_month & (index >= 0)
    return np.where(found, index, -1)
