"""Detection benchmark: accuracy on the public set, backtest time, fleet scan, naive STL ratio.

Usage (from the repo root, venv active):

    python benchmarks/bench_detect.py                      # everything
    python benchmarks/bench_detect.py --fleet-series 20000 # smaller fleet scan
    python benchmarks/bench_detect.py --workers 1,2 --fleet-series 1000000   # every core: sharded scan only
    SPENDWATCH_BENCH_DIR=/path/to/bench python benchmarks/bench_detect.py

Speed is reported as ratios to a naive per-series, per-step statsmodels STL loop measured in
the same run (the machine is shared and noisy: absolute seconds move, ratios much less).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from spendwatch.detect.model import Detector, ModelParams
from spendwatch.detect.parallel import Shard, fit_stream, shard_rows

if TYPE_CHECKING:
    from spendwatch.detect.backtest import Panel

REPO = Path(__file__).resolve().parents[1]
SPLIT_SEED = 0  # the tune/check halves quoted in docs/detection.md


def bench_dir() -> Path:
    configured = os.environ.get("SPENDWATCH_BENCH_DIR")
    return Path(configured) if configured else REPO.parent / "shared" / "bench"


def load_scorer(directory: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_score", directory / "score.py")
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {directory / 'score.py'}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def halves(series_ids: list[str]) -> tuple[set[str], set[str]]:
    ordered = sorted(series_ids)
    rng = np.random.default_rng(SPLIT_SEED)
    first = {str(s) for s in rng.choice(ordered, len(ordered) // 2, replace=False)}
    return first, set(ordered) - first


def run_public(directory: Path) -> tuple[dict[str, Panel], dict[str, set[Any]], float]:
    # imported here: the sharded scan's worker processes import this script, and need neither
    from spendwatch.detect.backtest import read_long_csv, run_backtest

    scorer = load_scorer(directory)
    panels: dict[str, Panel] = {}
    flags: dict[str, set[Any]] = {}
    started = time.perf_counter()
    for name in ("daily", "hourly"):
        panel = read_long_csv(directory / "public" / f"{name}.csv")
        frame = run_backtest(panel)
        panels[name] = panel
        fmt = "%Y-%m-%d" if name == "daily" else "%Y-%m-%dT%H:00:00Z"
        hits = frame[frame["is_anomaly"]]
        for sid, stamp in zip(hits["series_id"], hits["timestamp"].dt.strftime(fmt), strict=True):
            flags.setdefault(str(sid), set()).add(scorer.parse(stamp))
    return panels, flags, time.perf_counter() - started


def reachable_excess(labels: dict[str, Any], panels: dict[str, Panel]) -> float:
    """$ of events with a positive observed cost between start and detect_by (others no causal
    detector can flag: a spike on a missing row, a shift whose first days are all $0)."""
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


def print_reachable(directory: Path, flags: dict[str, set[Any]], panels: dict[str, Panel]) -> None:
    scorer = load_scorer(directory)
    labels = json.loads((directory / "public" / "labels.json").read_text())
    everything = sum(e["excess"] for v in labels.values() for e in v["events"])
    reachable = reachable_excess(labels, panels)
    detected = scorer.score(labels, flags)["all"]["dollar_recall"] * everything
    print(
        f"\nreachable $: {reachable / everything:.3f} of all anomalous $; "
        f"dollar recall of the reachable $: {detected / reachable:.3f}"
    )


def print_scores(directory: Path, flags: dict[str, set[Any]]) -> None:
    scorer = load_scorer(directory)
    labels = json.loads((directory / "public" / "labels.json").read_text())
    first, second = halves(list(labels))
    subsets = {"full": labels, "half A": {k: labels[k] for k in first}, "half B": {k: labels[k] for k in second}}
    print(
        f"{'set':7s} {'gran':7s} {'events':>6s} {'tp':>4s} {'fp':>4s} {'prec':>6s} {'recall':>6s} "
        f"{'F1':>6s} {'$recall':>7s} {'delay':>6s}"
    )
    for name, subset in subsets.items():
        for gran, r in scorer.score(subset, flags).items():
            print(
                f"{name:7s} {gran:7s} {r['events']:6d} {r['tp']:4d} {r['fp']:4d} {r['precision']:6.3f} "
                f"{r['recall']:6.3f} {r['f1']:6.3f} {r['dollar_recall']:7.3f} {r['mean_delay_steps']!s:>6s}"
            )


def naive_seconds_per_point(panel: Panel, n_series: int, n_steps: int) -> float:
    from spendwatch.detect.reference import naive_walk_forward  # statsmodels: only the naive loop needs it

    """Time one robust STL (MSTL for hourly) fit per decided point on a small sample."""
    params = ModelParams.for_granularity("hourly" if panel.granularity == "hourly" else "daily")
    spec = params.window_spec()
    periods = (24, 168) if panel.granularity == "hourly" else (7,)
    steps = np.linspace(spec.length, panel.values.shape[1] - 1, n_steps).astype(int)
    started = time.perf_counter()
    naive_walk_forward(panel.values[:n_series], periods, spec.length, steps)
    return (time.perf_counter() - started) / (n_series * n_steps)


def synthetic_fleet(n_series: int, n_steps: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Daily bills: weekly season, noise, some batch jobs (zeros), monthly fees, a few spikes."""
    rng = np.random.default_rng(seed)
    stamps = np.datetime64("2025-01-01") + np.arange(n_steps).astype("timedelta64[D]")
    first_of_month = (stamps - stamps.astype("datetime64[M]").astype("datetime64[D]")).astype(int) == 0
    weekday = np.arange(n_steps) % 7
    values = np.empty((n_series, n_steps))
    for lo in range(0, n_series, 5000):
        hi = min(lo + 5000, n_series)
        size = hi - lo
        level = np.exp(rng.uniform(1, 11, size))[:, None]
        weekend = np.where(weekday >= 5, rng.uniform(0.4, 1.0, size)[:, None], 1.0)
        block = level * weekend * np.exp(rng.uniform(0.02, 0.3, size)[:, None] * rng.standard_normal((size, n_steps)))
        batch = rng.random(size) < 0.1
        block[batch] *= rng.random((int(batch.sum()), n_steps)) < 0.5
        fee = rng.random(size) < 0.1
        block[np.ix_(fee, first_of_month)] += 10 * level[fee]
        block[rng.random(size) < 0.01, -1] *= 5
        values[lo:hi] = block
    return values, stamps


def additive_case(granularity: str, seed: int, size: float, removed: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """A strongly seasonal series that gains (or loses) a constant load at ``onset``.

    Hourly: business hours (~$5/h at night, ~$30/h at midday, 40% at weekends, 6% noise), onset at
    09:00 between day 42 and 48. Daily: $1000 weekdays, $400 weekend days, 5-8% noise, onset
    between day 120 and 126. ``size`` is the constant in $ per step.
    """
    rng = np.random.default_rng(seed)
    if granularity == "hourly":
        n_steps, onset = 24 * 80, 24 * (42 + seed % 7) + 9
        hours = np.arange(n_steps)
        shape = 5.0 + 25.0 * np.clip(np.sin(np.pi * ((hours + 3 * seed) % 24 - 7) / 12), 0.0, None)
        base = shape * np.where((hours // 24) % 7 >= 5, 0.4, 1.0) * np.exp(0.06 * rng.standard_normal(n_steps))
        stamps = np.datetime64("2026-01-05T00", "h") + np.arange(n_steps) * np.timedelta64(1, "h")
    else:
        n_steps, onset = 220, 120 + seed % 7
        noise = 0.05 + 0.03 * (seed % 2)
        base = 1000.0 * np.where(np.arange(n_steps) % 7 >= 5, 0.4, 1.0) * np.exp(noise * rng.standard_normal(n_steps))
        stamps = np.datetime64("2025-01-06", "D") + np.arange(n_steps) * np.timedelta64(1, "D")
    load = np.where(np.arange(n_steps) >= onset, size, 0.0)
    return base + (size - load if removed else load), stamps, onset


def run_additive(n_seeds: int) -> None:
    """Constant loads added to / removed from seasonal series: the onset must be reported within 3
    steps, then nothing for three weeks after adaptation (48 h hourly, 7 days daily). Compared with
    the purely multiplicative model (``additive_gate=inf``) in the same run."""
    print("\nadditive level changes (generated; onset within 3 steps, then flags after adaptation for 3 weeks):")
    sizes = {"hourly": (30.0, 75.38, 200.0), "daily": (500.0, 2000.0, 6000.0)}
    settle = {"hourly": (48, 48 + 24 * 21), "daily": (7, 7 + 21)}
    for granularity in ("hourly", "daily"):
        cases = [(seed, size, removed) for seed in range(n_seeds) for size in sizes[granularity] for removed in (0, 1)]
        built = [additive_case(granularity, seed, size, bool(removed)) for seed, size, removed in cases]
        panel, stamps = np.vstack([values for values, _, _ in built]), built[0][1]
        onsets = np.array([onset for _, _, onset in built])
        removed_rows = np.array([bool(removed) for _, _, removed in cases])
        steps = np.arange(panel.shape[1])[None, :] - onsets[:, None]
        first, last = settle[granularity]
        later = (steps >= first) & (steps < last)
        for label, gate in (("additive reading", 0.5), ("multiplicative only", float("inf"))):
            detector = Detector(ModelParams.for_granularity(granularity, additive_gate=gate))
            started = time.perf_counter()
            result = detector.fit(panel, stamps, decide_from=int(onsets.min()))
            seconds = time.perf_counter() - started
            window = slice(result.start, None)
            onset_flags = np.where(removed_rows[:, None], result.is_drop, result.is_anomaly)
            reported = (onset_flags & (steps[:, window] >= 0) & (steps[:, window] < 3)).any(axis=1).sum()
            alerts = (result.is_anomaly & later[:, window]).sum()
            drops = (result.is_drop & later[:, window]).sum()
            print(
                f"  {granularity:6s} {label:20s} {len(cases)} series: onset reported {reported}, "
                f"later alerts {alerts}, later drops {drops} ({seconds:.1f} s)"
            )


def synthetic_hourly_fleet(n_series: int, n_steps: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Hourly bills working UTC business hours from 2026-02-01 (60 days cross the March clock changes
    of the common zones, so the local-clock check runs), with noise and no anomaly."""
    rng = np.random.default_rng(seed)
    stamps = (np.datetime64("2026-02-01T00", "h") + np.arange(n_steps)).astype("datetime64[s]")
    hour = np.arange(n_steps) % 24
    busy = 0.3 + ((hour >= 9) & (hour < 18))
    level = np.exp(rng.uniform(0, 6, n_series))[:, None]
    return level * busy[None, :] * np.exp(0.1 * rng.standard_normal((n_series, n_steps))), stamps


def fleet_worker(n_series: int, n_steps: int, hourly: bool = False) -> None:
    if hourly:
        values, stamps = synthetic_hourly_fleet(n_series, n_steps)
    else:
        values, stamps = synthetic_fleet(n_series, n_steps)
    detector = Detector(ModelParams.for_granularity("hourly" if hourly else "daily"))
    started = time.perf_counter()
    result = detector.fit(values, stamps, decide_from=n_steps - 1)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_mb, "alerts": int(result.is_anomaly.sum())}))


def sharded_fleet_worker(n_series: int, n_steps: int, workers: int) -> None:
    """The fleet scan streamed in shards through ``fit_stream``: never the whole panel in one process.

    Shards are made from 8 generated blocks, each shard one of them times its own constant (the
    work per series is the same as for fresh series; generating 1M fresh ones would cost the parent
    as much as fitting them). A digest of every decision shows the runs decided the same.
    """
    stamps = np.datetime64("2025-01-01") + np.arange(n_steps).astype("timedelta64[D]")
    rows = shard_rows(n_steps)
    base = [synthetic_fleet(min(rows, n_series), n_steps, seed=seed)[0] for seed in range(8)]

    def shards() -> Iterator[tuple[int, Shard]]:
        for number, lo in enumerate(range(0, n_series, rows)):
            block = base[number % len(base)][: min(rows, n_series - lo)] * (1.0 + (number // len(base)) * 0.01)
            yield lo, Shard(block)

    params = ModelParams.for_granularity("daily")
    digest, alerts = hashlib.sha256(), 0
    started, cpu = time.perf_counter(), _cpu()
    workers_seen: dict[int, tuple[float, float]] = {}  # pid → (peak MB, CPU seconds), read from /proc
    for _, done in fit_stream(params, stamps, shards(), decide_from=n_steps - 1, workers=workers):
        workers_seen.update(_descendants())
        alerts += int(done.result.is_anomaly.sum())
        for name in ("expected", "score", "is_anomaly", "is_drop"):
            digest.update(np.ascontiguousarray(getattr(done.result, name)).tobytes())
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu_seconds": _cpu() - cpu + sum(c for _, c in workers_seen.values()),
                "parent_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "worker_peak_mb": max((m for m, _ in workers_seen.values()), default=0.0),
                "alerts": alerts,
                "digest": digest.hexdigest()[:16],
            }
        )
    )


def _descendants() -> dict[int, tuple[float, float]]:
    """Peak RSS (MB) and CPU seconds of every process below this one (forkserver workers are not our
    children, so ``RUSAGE_CHILDREN`` never sees them)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    mine, found = {os.getpid()}, {}
    for _ in range(3):  # us → the forkserver → its workers
        mine |= {pid for pid, parent in parents.items() if parent in mine}
    tick = os.sysconf("SC_CLK_TCK")
    for pid in mine - {os.getpid()}:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        peak = next((int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmHWM")), 0.0)
        found[pid] = (peak, (int(fields[11]) + int(fields[12])) / tick)
    return found


def _cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_sharded(n_series: int, n_steps: int, workers: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--sharded-worker", str(workers), "--fleet-series", str(n_series),
               "--fleet-steps", str(n_steps)]  # fmt: skip
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def run_workers(n_series: int, n_steps: int, counts: list[int], repeat: int) -> None:
    """workers=1 vs more, alternated in the same run: wall time, CPU time, peak memory, same decisions."""
    print(f"\nsharded fleet scan: {n_series:,} daily series x {n_steps} days, newest point, "
          f"shards of {shard_rows(n_steps):,} series; load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
    for round_ in range(1, repeat + 1):
        for workers in counts:
            run = run_sharded(n_series, n_steps, workers)
            runs[workers].append(run)
            print(
                f"  [{round_}] workers={workers}: {run['seconds']:.1f} s ({n_series / run['seconds']:,.0f} series/s), "
                f"{run['cpu_seconds']:.1f} CPU-s, peak RSS parent {run['parent_peak_mb']:.0f} MB, "
                f"largest worker {run['worker_peak_mb']:.0f} MB, {run['alerts']} alerts, decisions {run['digest']} "
                f"(load average {os.getloadavg()[0]:.1f})"
            )
    first = counts[0]
    digests = {run["digest"] for n in counts for run in runs[n]}
    for workers in counts[1:]:
        ratios = [a["seconds"] / b["seconds"] for a, b in zip(runs[first], runs[workers], strict=True)]
        print(f"  speed-up workers={workers} vs {first} (same round): "
              f"{', '.join(f'{r:.2f}x' for r in ratios)}")  # fmt: skip
    print(f"  decisions identical across every run: {'yes' if len(digests) == 1 else 'NO'}")


def run_fleet(n_series: int, n_steps: int) -> dict[str, float]:
    command = [
        sys.executable,
        __file__,
        "--fleet-worker",
        "--fleet-series",
        str(n_series),
        "--fleet-steps",
        str(n_steps),
    ]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fleet-series", type=int, default=100_000)
    parser.add_argument("--fleet-steps", type=int, default=400)
    parser.add_argument("--naive-series", type=int, default=3)
    parser.add_argument("--naive-steps", type=int, default=10)
    parser.add_argument("--skip-fleet", action="store_true")
    parser.add_argument(
        "--additive-seeds", type=int, default=10, help="seeds per case of the additive check (0 = skip)"
    )
    parser.add_argument(
        "--workers", help="comma-separated worker counts for the sharded fleet scan alone, e.g. 1,2 (skips the rest)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="alternated rounds of the sharded fleet scan")
    parser.add_argument("--fleet-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--fleet-hourly", action="store_true", help="with --fleet-worker: hourly series")
    parser.add_argument("--sharded-worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fleet_worker:
        fleet_worker(args.fleet_series, args.fleet_steps, args.fleet_hourly)
        return
    if args.sharded_worker:
        sharded_fleet_worker(args.fleet_series, args.fleet_steps, args.sharded_worker)
        return
    if args.workers:
        run_workers(args.fleet_series, args.fleet_steps, [int(n) for n in args.workers.split(",")], args.repeat)
        return
    directory = bench_dir()
    if not (directory / "public" / "labels.json").exists():
        raise SystemExit(f"benchmark not found at {directory}; set SPENDWATCH_BENCH_DIR")
    panels, flags, backtest_seconds = run_public(directory)
    print_scores(directory, flags)
    print_reachable(directory, flags, panels)
    points = {name: int(p.values.size) for name, p in panels.items()}
    per_point = {name: naive_seconds_per_point(p, args.naive_series, args.naive_steps) for name, p in panels.items()}
    naive_backtest = sum(per_point[n] * points[n] for n in panels)
    print(f"\nbacktest (read + decide every step, both files): {backtest_seconds:.1f} s")
    print(
        f"naive STL loop: {per_point['daily'] * 1e3:.1f} ms/point daily (STL), "
        f"{per_point['hourly'] * 1e3:.1f} ms/point hourly (MSTL) -> {naive_backtest:.0f} s extrapolated; "
        f"ratio {naive_backtest / backtest_seconds:.0f}x"
    )
    if args.additive_seeds:
        run_additive(args.additive_seeds)
    if args.skip_fleet:
        return
    fleet = run_fleet(args.fleet_series, args.fleet_steps)
    naive_fleet = per_point["daily"] * args.fleet_series
    print(
        f"fleet scan ({args.fleet_series} daily series x {args.fleet_steps} days, newest point): "
        f"{fleet['seconds']:.1f} s, peak RSS {fleet['peak_rss_mb']:.0f} MB (incl. the generated panel), "
        f"{int(fleet['alerts'])} alerts; naive STL {naive_fleet:.0f} s extrapolated; "
        f"ratio {naive_fleet / fleet['seconds']:.0f}x"
    )


if __name__ == "__main__":
    main()
