"""Digest charts draw any window quietly: matplotlib's warnings would reach the user's terminal."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime, timedelta

import pytest

from spendwatch.notify.charts import incident_chart
from spendwatch.store.records import SeriesPoint

START = datetime(2026, 11, 1, tzinfo=UTC)


def _points(steps: int, step: timedelta) -> list[SeriesPoint]:
    return [
        SeriesPoint(START + i * step, 100.0 + (40.0 if i == steps - 2 else 0.0), 100.0, 90.0, 110.0, i == steps - 2)
        for i in range(steps)
    ]


@pytest.mark.parametrize(
    ("steps", "granularity"),
    [(30, "hourly"), (50, "hourly"), (60, "hourly"), (71, "hourly"), (170, "hourly"), (5, "daily"), (400, "daily")],
)
def test_a_chart_of_any_length_draws_without_a_warning(steps: int, granularity: str) -> None:
    step = timedelta(hours=1) if granularity == "hourly" else timedelta(days=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        png = incident_chart(_points(steps, step), "USD", granularity=granularity)
    assert png is not None and png.startswith(b"\x89PNG")
