"""Short-row medians: the sorting network of ``spendwatch.detect.robust`` against ``np.sort`` per row.

The hourly backtest takes NaN-aware medians of 2-3 values (held-out weeks, week pairs) by the hundred
million. ``nanmedian_last`` (a sorting network for the lengths in ``SMALL_SORT_NETWORKS``, ``np.sort``
from there on) and ``np.sort`` per row run here on the same random rows (30% NaN, ties included), their
results are checked equal, and the ratio is printed (the baseline is measured in the same run).

    python benchmarks/bench_medians.py               # 20 million medians per row length
    python benchmarks/bench_medians.py --rows 2000000
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from spendwatch.detect.robust import SMALL_SORT_NETWORKS, nanmedian_last


def by_sort(values: np.ndarray) -> np.ndarray:
    """The general path of ``nanmedian_last``: one ``np.sort`` per row, NaN last."""
    ordered = np.sort(values, axis=-1)
    n_valid = np.count_nonzero(~np.isnan(values), axis=-1)
    low = np.maximum((n_valid - 1) // 2, 0)[..., None]
    high = np.maximum(n_valid // 2, 0)[..., None]
    middle = 0.5 * (np.take_along_axis(ordered, low, axis=-1) + np.take_along_axis(ordered, high, axis=-1))[..., 0]
    return np.where(n_valid > 0, middle, np.nan)


def best_of(repeats: int, median: Callable[[np.ndarray], np.ndarray], values: np.ndarray) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        median(values)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'values per row':>14} {'rows':>11} {'np.sort (s)':>12} {'robust (s)':>12} {'speed-up':>9}")
    for length in range(2, 6):
        values = np.round(rng.standard_normal((args.rows, length)), 2)
        values[rng.random(values.shape) < 0.3] = np.nan
        assert np.array_equal(by_sort(values), nanmedian_last(values), equal_nan=True)
        baseline = best_of(args.repeats, by_sort, values)
        network = best_of(args.repeats, nanmedian_last, values)
        path = "network" if length in SMALL_SORT_NETWORKS else "np.sort"
        print(f"{length:>14} {args.rows:>11,} {baseline:>12.2f} {network:>12.2f} {baseline / network:>8.1f}x  ({path})")


if __name__ == "__main__":
    main()
