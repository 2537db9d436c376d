"""Every core for one monitor: its series in shards, fitted by worker processes.

The detector is pure per series (a series' decisions depend on its own row of the panel only), so a
monitor's panel can be cut into shards of whole series and fitted anywhere, in any order, with the
same result to the last bit (``tests/detect/test_parallel.py`` checks it). ``fit_stream`` takes the
shards as an iterator — the runner streams them out of the store, the benchmark out of a
generator — and keeps at most ``2 × workers`` in flight, so neither the parent nor a worker ever
holds the whole panel: memory is bounded by the shard size (``SHARD_CELLS``), not by the fleet.

* ``workers = 1``, or a panel that fits in one shard, fits in-process: no process is started.
* Workers come from the ``forkserver`` start method: a clean server process forks them, never the
  daemon itself (forking a process that runs DuckDB and scheduler threads can inherit a held lock).
* A worker returns only what the caller keeps: with ``flagged_only`` the rows that alerted, dropped
  or are marked ``keep`` (series with an open incident) — the rest of a shard never crosses back.

``available_cpus`` is the default worker count: the CPUs this process may run on (its affinity
mask) capped by its cgroup's CPU quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``/``cfs_period_us``),
so a container limited to 2 CPUs on a 64-core node starts 2 workers, not 64.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from spendwatch.detect.model import DetectionResult, Detector, ModelParams
from spendwatch.detect.robust import BoolArray, FloatArray
from spendwatch.detect.seasonal import IntArray

T = TypeVar("T")

SHARD_CELLS = 4_000_000
"""Panel cells (series × steps) per shard: 32 MB of float64, a worker's peak a few times that."""
_RESULT_FIELDS = ("expected", "lower", "upper", "score", "is_anomaly", "kind", "is_drop")


@dataclass(frozen=True)
class Shard:
    """Whole series of one panel: ``values`` (rows × steps), their rebase columns, rows to keep, and
    the recurring dollars the bill declares in them (``Detector.fit(declared=...)``, same shape)."""

    values: FloatArray
    rebase_at: IntArray | None = None
    keep: BoolArray | None = None
    declared: FloatArray | None = None


@dataclass(frozen=True)
class ShardResult:
    """Decisions for ``rows`` of a shard (all of them, or the flagged and kept ones)."""

    rows: IntArray
    result: DetectionResult


class WorkerFailed(RuntimeError):
    """A detection worker process died (killed, out of memory): the monitor's run is not complete."""


def shard_rows(n_steps: int, cells: int = SHARD_CELLS) -> int:
    """Series per shard for panels of ``n_steps`` columns."""
    return max(1, cells // max(1, n_steps))


def fit_stream(
    params: ModelParams,
    timestamps: np.ndarray,
    shards: Iterable[tuple[T, Shard]],
    *,
    decide_from: int,
    workers: int,
    flagged_only: bool = False,
) -> Iterator[tuple[T, ShardResult]]:
    """Fit every ``(tag, shard)``; yields ``(tag, result)`` in the order the shards came.

    ``tag`` stays in this process (keys, dimensions …: whatever the caller needs beside the result).
    """
    stream = iter(shards)
    first = next(stream, None)
    if first is None:
        return
    second = next(stream, None)
    task = _Task(params, np.asarray(timestamps), decide_from, flagged_only)
    if workers <= 1 or second is None:
        for tag, shard in _chain(first, second, stream):
            yield tag, task(shard)
        return
    yield from _in_pool(task, _chain(first, second, stream), workers)


def _chain(
    first: tuple[T, Shard], second: tuple[T, Shard] | None, rest: Iterator[tuple[T, Shard]]
) -> Iterator[tuple[T, Shard]]:
    yield first
    if second is not None:
        yield second
        yield from rest


def _in_pool(task: _Task, shards: Iterator[tuple[T, Shard]], workers: int) -> Iterator[tuple[T, ShardResult]]:
    context = multiprocessing.get_context("forkserver")
    # The server imports numpy and the model once; every worker forked from it starts with them.
    context.set_forkserver_preload(["spendwatch.detect.parallel"])
    pending: deque[tuple[T, Future[ShardResult]]] = deque()
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        try:
            for tag, shard in shards:
                pending.append((tag, pool.submit(task, shard)))
                # Two shards per worker in flight: one being fitted, the next one queued behind it.
                while len(pending) >= 2 * workers:
                    yield _next(pending)
            while pending:
                yield _next(pending)
        finally:
            for _, future in pending:
                future.cancel()


def _next(pending: deque[tuple[T, Future[ShardResult]]]) -> tuple[T, ShardResult]:
    tag, future = pending.popleft()
    try:
        return tag, future.result()
    except BrokenProcessPool as exc:
        raise WorkerFailed(
            "a detection worker process died (killed, or out of memory: lower detection.workers)"
        ) from exc


@dataclass(frozen=True)
class _Task:
    """What a worker runs for one shard (picklable: module-level class, plain fields)."""

    params: ModelParams
    timestamps: np.ndarray
    decide_from: int
    flagged_only: bool

    def __call__(self, shard: Shard) -> ShardResult:
        result = Detector(self.params).fit(
            shard.values,
            self.timestamps,
            decide_from=self.decide_from,
            rebase_at=shard.rebase_at,
            declared=shard.declared,
        )
        n_rows = shard.values.shape[0]
        if not self.flagged_only:
            return ShardResult(np.arange(n_rows, dtype=np.int64), result)
        wanted = result.is_anomaly.any(axis=1) | result.is_drop.any(axis=1)
        if shard.keep is not None:
            wanted |= shard.keep
        rows = np.flatnonzero(wanted).astype(np.int64)
        return ShardResult(rows, _take(result, rows))


def _take(result: DetectionResult, rows: IntArray) -> DetectionResult:
    return DetectionResult(start=result.start, **{name: getattr(result, name)[rows] for name in _RESULT_FIELDS})


def concatenate(results: Iterable[DetectionResult]) -> DetectionResult:
    """One result of several shards' results, rows in the given order."""
    parts = list(results)
    if not parts:
        raise ValueError("no results to concatenate")
    return DetectionResult(
        start=parts[0].start,
        **{name: np.concatenate([getattr(p, name) for p in parts]) for name in _RESULT_FIELDS},
    )


# -- how many workers ----------------------------------------------------------------------------


def available_cpus(
    *,
    affinity: int | None = None,
    proc_cgroup: Path = Path("/proc/self/cgroup"),
    cgroup_root: Path = Path("/sys/fs/cgroup"),
) -> int:
    """CPUs this process may use: its affinity mask, capped by its cgroup's CPU quota (rounded up)."""
    if affinity is None:
        affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_cpu_quota(proc_cgroup, cgroup_root)
    cpus = affinity if quota is None else min(affinity, math.ceil(quota))
    return max(1, cpus)


def cgroup_cpu_quota(proc_cgroup: Path, cgroup_root: Path) -> float | None:
    """The CPU quota (in CPUs) of this process's cgroup and its ancestors, the tightest; None if unlimited."""
    try:
        lines = proc_cgroup.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    quotas: list[float] = []
    for line in lines:
        number, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if number == "0" and controllers == "":
            quotas += _v2_quotas(cgroup_root, path)
        elif "cpu" in controllers.split(","):
            quotas += _v1_quotas(cgroup_root, controllers, path)
    return min(quotas) if quotas else None


def _levels(mount: Path, path: str) -> list[Path]:
    """The cgroup folder of ``path`` and its ancestors under ``mount``.

    Inside a container the cgroup namespace shows the container's own cgroup as ``/`` while
    ``/proc/self/cgroup`` may still name the host path: a path that does not exist under the mount
    falls back to the mount itself (the container's cgroup).
    """
    parts = [p for p in path.strip().split("/") if p]
    found = [mount.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]
    existing = [level for level in found if level.is_dir()]
    return existing or [mount]


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return None


def _v2_quotas(root: Path, path: str) -> list[float]:
    quotas = []
    for level in _levels(root, path):
        text = _read(level / "cpu.max")
        if not text:
            continue
        limit, _, period = text.partition(" ")
        if limit != "max" and period:
            quotas.append(int(limit) / int(period))
    return quotas


def _v1_quotas(root: Path, controllers: str, path: str) -> list[float]:
    mounts = [root / controllers, root / "cpu,cpuacct", root / "cpu"]
    mount = next((m for m in mounts if m.is_dir()), None)
    if mount is None:
        return []
    quotas = []
    for level in _levels(mount, path):
        limit, period = _read(level / "cpu.cfs_quota_us"), _read(level / "cpu.cfs_period_us")
        if limit and period and int(limit) > 0 and int(period) > 0:
            quotas.append(int(limit) / int(period))
    return quotas
