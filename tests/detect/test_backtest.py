"""Reading long-format cost CSVs, the walk-forward backtest and the flags file."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pytest

from spendwatch.detect.backtest import Panel, read_long_csv, run_backtest, write_flags
from spendwatch.errors import InputError


def write_csv(path: Path, rows: list[tuple[str, str, str]], header: str = "series_id,timestamp,cost") -> Path:
    path.write_text(header + "\n" + "".join(f"{a},{b},{c}\n" for a, b, c in rows))
    return path


def daily_rows(series: str, days: int, level: float = 100.0, skip: tuple[int, ...] = ()) -> list[tuple[str, str, str]]:
    start = np.datetime64("2025-01-01")
    rng = np.random.default_rng(abs(hash(series)) % 1000)
    return [
        (series, str(start + np.timedelta64(d, "D")), f"{level * np.exp(0.05 * rng.standard_normal()):.4f}")
        for d in range(days)
        if d not in skip
    ]


def test_daily_file_is_pivoted_onto_a_regular_grid_with_gaps_as_nan(tmp_path: Path) -> None:
    rows = daily_rows("b", 10, skip=(3, 4)) + daily_rows("a", 8)
    panel = read_long_csv(write_csv(tmp_path / "d.csv", rows))
    assert panel.granularity == "daily"
    assert panel.series_ids == ["a", "b"]
    assert panel.values.shape == (2, 10)
    assert np.isnan(panel.values[1, [3, 4]]).all() and np.isnan(panel.values[0, 8:]).all()
    assert panel.timestamps[0] == np.datetime64("2025-01-01T00:00:00")
    assert np.all(np.diff(panel.timestamps) == np.timedelta64(1, "D"))


def test_hourly_format_is_detected(tmp_path: Path) -> None:
    rows = [("h", f"2026-01-05T{h:02d}:00:00Z", "1.5") for h in (0, 1, 3)]
    panel = read_long_csv(write_csv(tmp_path / "h.csv", rows))
    assert panel.granularity == "hourly"
    assert panel.values.shape == (1, 4) and np.isnan(panel.values[0, 2])


@pytest.mark.parametrize(
    ("content", "row", "column"),
    [
        ("series_id,timestamp\na,2025-01-01\n", 1, "cost"),
        ("series_id,timestamp,cost\na,2025-01-01,1\na,2025-13-40,2\n", 3, "timestamp"),
        ("series_id,timestamp,cost\na,2025-01-01,1\na,yesterday,2\n", 3, "timestamp"),
        ("series_id,timestamp,cost\na,2025-01-01,1\na,2025-01-02,abc\n", 3, "cost"),
        ("series_id,timestamp,cost\na,2025-01-01,1\na,2025-01-02T00:00:00Z,2\n", 3, "timestamp"),
        ("series_id,timestamp,cost\na,2025-01-01,1\nb,2025-01-01,1\na,2025-01-01,3\n", 4, "timestamp"),
        ("series_id,timestamp,cost\na,2025-01-01,1\n,2025-01-02,1\n", 3, "series_id"),
        ("series_id,timestamp,cost\n", 2, "series_id"),
        ("", 1, "series_id"),
        ("series_id,timestamp,cost\na,2025-01-01,1\na,2025-01-02,1,7\n", 3, "cost"),
        ("series_id,timestamp,cost\na,2025-01-01\n", 2, "cost"),
    ],
)
def test_user_mistakes_raise_one_line_input_error_naming_file_row_column(
    tmp_path: Path, content: str, row: int, column: str | None
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(InputError) as caught:
        read_long_csv(path)
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message
    assert f"row {row}" in message
    if column is not None:
        assert f"column '{column}'" in message


def test_granularity_that_contradicts_the_file_is_an_input_error(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", daily_rows("a", 5))
    with pytest.raises(InputError, match="hourly"):
        read_long_csv(path, granularity="hourly")


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_long_csv(tmp_path / "nope.csv")


def test_backtest_emits_one_row_per_observed_input_row_and_flags_a_spike(tmp_path: Path) -> None:
    rows = daily_rows("a", 120, skip=(50, 51)) + daily_rows("b", 120)
    spike = ("b", "2025-04-20", "900.0")
    rows = [spike if (r[0], r[1]) == spike[:2] else r for r in rows]
    panel = read_long_csv(write_csv(tmp_path / "d.csv", rows))
    frame = run_backtest(panel)
    assert len(frame) == len(rows)
    flagged = frame[frame["is_anomaly"]]
    assert list(zip(flagged["series_id"], flagged["timestamp"], strict=True)) == [("b", pd.Timestamp("2025-04-20"))]


def test_flags_file_keeps_the_input_timestamp_format(tmp_path: Path) -> None:
    rows = [("h", f"2026-01-{d:02d}T{h:02d}:00:00Z", "2.0") for d in range(5, 7) for h in range(24)]
    panel = read_long_csv(write_csv(tmp_path / "h.csv", rows))
    out = tmp_path / "flags.csv"
    write_flags(run_backtest(panel), out, panel.granularity)
    with out.open() as handle:
        written = list(csv.DictReader(handle))
    assert list(written[0]) == ["series_id", "timestamp", "score", "is_anomaly"]
    assert {r["timestamp"] for r in written} == {r[1] for r in rows}
    assert {r["is_anomaly"] for r in written} == {"false"}


def test_backtest_rejects_params_of_the_other_granularity() -> None:
    from spendwatch.detect.model import ModelParams

    panel = Panel(["a"], np.array(["2025-01-01"], dtype="datetime64[s]"), np.ones((1, 1)), "daily")
    with pytest.raises(ValueError, match="hourly"):
        run_backtest(panel, ModelParams.for_granularity("hourly"))


def bench_dir() -> Path:
    configured = os.environ.get("SPENDWATCH_BENCH_DIR")
    return Path(configured) if configured else Path(__file__).resolve().parents[3] / "shared" / "bench"


def load_scorer(directory: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_score", directory / "score.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reachable_excess(labels: dict[str, Any], panels: dict[str, Panel]) -> float:
    """$ of events with at least one positive observed cost between start and detect_by.

    Two public events are unreachable for any causal detector: a spike on a missing row and
    a shift whose detection window holds only $0 days. Their dollars cannot count against it.
    """
    total = 0.0
    for sid, label in labels.items():
        panel = panels[label["granularity"]]
        row = panel.values[panel.series_ids.index(sid)]
        for event in label["events"]:
            start = np.datetime64(event["start"].replace("Z", ""), "s")
            until = np.datetime64(event["detect_by"].replace("Z", ""), "s")
            window = row[(panel.timestamps >= start) & (panel.timestamps <= until)]
            if np.nan_to_num(window).max(initial=0.0) > 0:
                total += event["excess"]
    return total


# Floors at what the detector measures (deterministic: `python benchmarks/eval_detect.py`), so a
# change that loses accuracy fails here; raise them as the detector improves. F1 / $ recall of the
# events' dollars (of the reachable ones on public/, where two events are unreachable) / delay.
# The mean delay is over the detected events only: the filled-up rule's pre-run rate (2026-12-06)
# caught leaks on intermittent jobs 11-22 steps in, which raised it (0.69 -> 0.79, 1.18 -> 1.39)
# although no event that was caught before is caught later.
# Judging earlier charge days in hindsight (2026-12-06, not by the model's decision there) made the
# daily fleet scan ~2.4x faster and moved public by one false alarm (45 -> 46: F1 0.9079 -> 0.9068).
# The filled-up alarm held for MIN_RUN steps instead of a span (same day) removed false alarms after
# late-told jobs: public FP 46 -> 44 (F1 0.909), public-v2 FP 153 -> 146 (F1 0.793 -> 0.799).
# The CUSUM counting its decided step and holding a told run for HOLD decisions (helper-28): public
# FP 39 -> 36 (F1 0.920 -> 0.924), public-v2 TP 390 -> 391 (d0111), FP 129 -> 123 (F1 0.819 -> 0.825).
# A first quarterly charge on a learnt billing day in the series' first quarter (helper-29a): public
# FP 36 -> 33 (F1 0.924 -> 0.927), public-v2 FP 123 -> 110 (F1 0.825 -> 0.836); no event changed.
# Bounded at five charges' worth on review: public FP 33 -> 34 (F1 0.9258, d0260's prorated first fee).
BENCH_FLOORS = {
    "public": {"f1": 0.925, "reachable": 0.988, "delay": 0.79},
    "public-v2": {"f1": 0.836, "reachable": 0.905, "delay": 1.34},
}


@pytest.mark.bench
@pytest.mark.parametrize("name", sorted(BENCH_FLOORS))
def test_public_benchmark_meets_the_floors(tmp_path: Path, name: str) -> None:
    directory = bench_dir()
    if not (directory / name / "labels.json").exists():
        pytest.skip(f"benchmark {name}/ not found at {directory} (set SPENDWATCH_BENCH_DIR)")
    scorer = load_scorer(directory)
    labels = json.loads((directory / name / "labels.json").read_text())
    panels: dict[str, Panel] = {}
    flags: dict[str, set[Any]] = {}
    for granularity in ("daily", "hourly"):
        panel = read_long_csv(directory / name / f"{granularity}.csv")
        panels[granularity] = panel
        out = tmp_path / f"{granularity}.csv"
        write_flags(run_backtest(panel), out, granularity)
        for sid, group in pd.read_csv(out, dtype=str).groupby("series_id"):
            kept = group[group["is_anomaly"] == "true"]["timestamp"]
            flags[str(sid)] = {scorer.parse(t) for t in kept}
    result = scorer.score(labels, flags)["all"]
    detected_share = result["dollar_recall"] * sum(e["excess"] for v in labels.values() for e in v["events"])
    floors = BENCH_FLOORS[name]
    assert result["f1"] >= floors["f1"], result
    assert result["mean_delay_steps"] <= floors["delay"], result
    assert detected_share / reachable_excess(labels, panels) >= floors["reachable"], result
