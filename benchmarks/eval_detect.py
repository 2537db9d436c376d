"""Accuracy of the detector on both benchmark families, on the tuning half and the check half.

Usage (from the repo root, venv active):

    python benchmarks/eval_detect.py                         # public/ and public-v2/, full + half A + half B
    python benchmarks/eval_detect.py --sets public-v2 --details misses,fp
    python benchmarks/eval_detect.py --flags-dir /tmp/flags  # also write the flags files score.py reads

Runs exactly what ``spendwatch backtest`` runs (read the CSV, causal walk-forward, the flags file) on
``daily.csv`` and ``hourly.csv`` of each set and scores the flags with the set's own ``score.py``.
Half A / half B: numpy seed 0 over the sorted series ids of each set (``halves`` in bench_detect.py).
Half A is the one rules and knobs were tuned on; half B is only ever read to check.

``--details`` lists, per set, the missed events (``misses``, dollar-ranked), the false-alarm runs
(``fp``) and the delay of each detected event (``delays``) — what one looks at while working on a rule.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_detect import bench_dir, halves, load_scorer

from spendwatch.detect.backtest import Panel, read_long_csv, run_backtest, write_flags

SETS = ("public", "public-v2")


@dataclass
class SetRun:
    name: str
    labels: dict[str, Any]
    panels: dict[str, Panel]
    flags: dict[str, set[datetime]]
    seconds: float


def run_set(directory: Path, name: str, flags_dir: Path | None) -> SetRun:
    scorer = load_scorer(directory)
    labels = json.loads((directory / name / "labels.json").read_text())
    panels: dict[str, Panel] = {}
    flags: dict[str, set[datetime]] = {}
    seconds = 0.0
    for granularity in ("daily", "hourly"):
        started = time.perf_counter()
        panel = read_long_csv(directory / name / f"{granularity}.csv")
        frame = run_backtest(panel)
        seconds += time.perf_counter() - started
        panels[granularity] = panel
        if flags_dir is not None:
            flags_dir.mkdir(parents=True, exist_ok=True)
            write_flags(frame, flags_dir / f"{name}-{granularity}.csv", granularity)
        fmt = "%Y-%m-%d" if granularity == "daily" else "%Y-%m-%dT%H:00:00Z"
        hits = frame[frame["is_anomaly"]]
        for sid, stamp in zip(hits["series_id"], hits["timestamp"].dt.strftime(fmt), strict=True):
            flags.setdefault(str(sid), set()).add(scorer.parse(stamp))
    return SetRun(name, labels, panels, flags, seconds)


def reachable_excess(labels: dict[str, Any], panels: dict[str, Panel]) -> float:
    """$ of events with a positive observed cost between start and detect_by: what a causal detector
    that flags observed costs can reach (a spike on a missing row or a shift whose first days are all
    $0 is not)."""
    total = 0.0
    for sid, label in labels.items():
        panel = panels[label["granularity"]]
        row = panel.values[panel.series_ids.index(sid)]
        for event in label["events"]:
            start = np.datetime64(event["start"].replace("Z", ""), "s")
            until = np.datetime64(event["detect_by"].replace("Z", ""), "s")
            window = row[(panel.timestamps >= start) & (panel.timestamps <= until)]
            total += event["excess"] if np.nan_to_num(window).max(initial=0.0) > 0 else 0.0
    return total


def score_rows(directory: Path, run: SetRun) -> list[tuple[str, str, dict[str, Any], float]]:
    """(subset, granularity, score.py figures, dollar recall of the reachable $) for full / A / B."""
    scorer = load_scorer(directory)
    first, second = halves(list(run.labels))
    subsets = {
        "full": run.labels,
        "half A": {k: run.labels[k] for k in sorted(first)},
        "half B": {k: run.labels[k] for k in sorted(second)},
    }
    rows = []
    for subset_name, subset in subsets.items():
        result = scorer.score(subset, run.flags)
        for granularity, figures in result.items():
            chosen = {k: v for k, v in subset.items() if granularity in ("all", v["granularity"])}
            everything = sum(e["excess"] for v in chosen.values() for e in v["events"])
            reachable = reachable_excess(chosen, run.panels)
            detected = figures["dollar_recall"] * everything
            rows.append((subset_name, granularity, figures, detected / reachable if reachable else 0.0))
    return rows


def print_scores(run: SetRun, rows: list[tuple[str, str, dict[str, Any], float]]) -> None:
    print(f"\n{run.name}: backtest {run.seconds:.1f} s (read + decide, both files)")
    print(
        f"{'set':7s} {'gran':7s} {'events':>6s} {'tp':>4s} {'fp':>4s} {'prec':>6s} {'recall':>6s} "
        f"{'F1':>6s} {'$recall':>7s} {'$reach':>7s} {'delay':>6s}"
    )
    for subset, granularity, r, reach in rows:
        print(
            f"{subset:7s} {granularity:7s} {r['events']:6d} {r['tp']:4d} {r['fp']:4d} {r['precision']:6.3f} "
            f"{r['recall']:6.3f} {r['f1']:6.3f} {r['dollar_recall']:7.3f} {reach:7.3f} {r['mean_delay_steps']!s:>6s}"
        )


def _step(label: dict[str, Any]) -> timedelta:
    return timedelta(days=1) if label["granularity"] == "daily" else timedelta(hours=1)


def print_details(directory: Path, run: SetRun, what: set[str]) -> None:
    scorer = load_scorer(directory)
    first, _ = halves(list(run.labels))
    misses, delays, false_runs = [], [], []
    for sid, label in sorted(run.labels.items()):
        half = "A" if sid in first else "B"
        step = _step(label)
        flags = sorted(t for t in run.flags.get(sid, ()) if t >= scorer.parse(label["score_from"]))
        for event in label["events"]:
            start, by = scorer.parse(event["start"]), scorer.parse(event["detect_by"])
            hit = [t for t in flags if start <= t <= by]
            row = (event["excess"], sid, half, event["kind"], event["start"], event["end"])
            if hit:
                delays.append((*row, (hit[0] - start) / step))
            else:
                misses.append(row)
        windows = [(scorer.parse(e["start"]), scorer.parse(e["end"])) for e in label["events"]]
        windows += [(scorer.parse(a), scorer.parse(b)) for a, b in label["ignore"]]
        outside = [t for t in flags if not any(a <= t <= b for a, b in windows)]
        runs: list[list[datetime]] = []
        for t in outside:
            if runs and t - runs[-1][-1] <= 2 * step:
                runs[-1].append(t)
            else:
                runs.append([t])
        false_runs += [(sid, half, r[0], len(r)) for r in runs]
    if "misses" in what:
        print(f"\n{run.name}: {len(misses)} missed events, by $")
        for excess, sid, half, kind, start, end in sorted(misses, reverse=True):
            print(f"  {excess:12,.0f}  {sid} ({half})  {kind:8s} {start} .. {end}")
    if "delays" in what:
        print(f"\n{run.name}: detected events with a delay of 1 step or more")
        for excess, sid, half, kind, start, _, delay in sorted(delays, key=lambda d: -d[-1]):
            if delay >= 1:
                print(f"  {delay:5.0f}  {excess:12,.0f}  {sid} ({half})  {kind:8s} {start}")
    if "fp" in what:
        print(f"\n{run.name}: {len(false_runs)} false-alarm runs")
        for sid, half, first_flag, length in false_runs:
            print(f"  {sid} ({half})  {first_flag:%Y-%m-%d %H:%M}  {length} flag(s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    parser.add_argument("--details", default="", help="comma list of misses, fp, delays")
    parser.add_argument("--flags-dir", type=Path, help="also write the flags files (score.py input) here")
    parser.add_argument("--json", type=Path, help="write every figure as JSON here")
    args = parser.parse_args()
    directory = bench_dir()
    everything: dict[str, Any] = {}
    for name in args.sets:
        if not (directory / name / "labels.json").exists():
            raise SystemExit(f"benchmark set {name} not found under {directory}; set SPENDWATCH_BENCH_DIR")
        run = run_set(directory, name, args.flags_dir)
        rows = score_rows(directory, run)
        print_scores(run, rows)
        if args.details:
            print_details(directory, run, set(args.details.split(",")))
        everything[name] = {
            "seconds": run.seconds,
            "rows": [{"subset": s, "granularity": g, **r, "reachable_dollar_recall": x} for s, g, r, x in rows],
        }
    if args.json is not None:
        args.json.write_text(json.dumps(everything, indent=1))


if __name__ == "__main__":
    main()
