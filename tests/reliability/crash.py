"""The crash harness: a forkserver of children that stop at a chosen moment, and what the tests compare.

See ``test_crash_store.py`` / ``test_crash_effects.py`` for what is asserted, ``crash_ops`` for the
passes and the moments.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from spendwatch.store import Store
from spendwatch.store.snapshots import check_file
from tests.reliability import crash_ops as ops

KILLS = 20
SEED = 14
CHILD_DEADLINE = 180.0
KILLED: dict[str, tuple[int, int]] = {}  # operation -> (kills, moments), printed for docs/reliability.md


# -- the forkserver ---------------------------------------------------------------------------------


def run_child(forks: Any, job: ops.Job) -> bool:
    """Run ``job`` in a child; with ``kill_at``, SIGKILL it at that moment. True if it was killed there."""
    ready = forks.Event()
    process = forks.Process(target=ops.child, args=(job, ready), daemon=True)
    process.start()
    try:
        deadline = CHILD_DEADLINE
        while not ready.wait(0.02):
            deadline -= 0.02
            if not process.is_alive() or deadline <= 0:
                break
        if ready.is_set():
            os.kill(process.pid, signal.SIGKILL)
        process.join(60)
        if job.kill_at is None:
            assert process.exitcode == 0, f"the counting run of {job.operation} failed ({process.exitcode})"
        return ready.is_set()
    finally:
        if process.is_alive():
            process.kill()
            process.join()


def moments(forks: Any, job: ops.Job, tmp: Path) -> list[str]:
    events = tmp / "moments.json"
    run_child(forks, ops.Job(**{**job.__dict__, "kill_at": None, "events_file": str(events)}))
    seen: list[str] = json.loads(events.read_text())
    return seen


def kill_points(seen: list[str], salt: str, must: tuple[str, ...]) -> list[int]:
    """Twenty seeded moments, plus every moment around the calls that must never happen twice."""
    rng = random.Random(f"{SEED}:{salt}")
    drawn = set(rng.sample(range(1, len(seen) + 1), min(KILLS, len(seen))))
    around = {index for index, label in enumerate(seen, 1) if any(word in label for word in must)}
    return sorted(drawn | around)


def restore(template: Path, folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(template, folder)


def crash_and_recover(
    forks: Any,
    tmp_path: Path,
    template: Path,
    job: ops.Job,
    recover: Callable[[Path], Any],
    before_each: Callable[[], None] = lambda: None,
    must: tuple[str, ...] = (),
) -> Iterator[tuple[int, str, Path, Any]]:
    """For each seeded moment: fresh state, child killed there, store checked, pass re-run here."""
    counting = tmp_path / "counting"
    restore(template, counting)
    before_each()
    seen = moments(forks, ops.Job(**{**job.__dict__, "folder": str(counting)}), tmp_path)
    assert len(seen) >= KILLS, f"only {len(seen)} moments in a clean {job.operation}"
    points = kill_points(seen, job.operation, must)
    work = tmp_path / "work"
    for point in points:
        restore(template, work)
        before_each()
        killed = run_child(forks, ops.Job(**{**job.__dict__, "folder": str(work), "kill_at": point}))
        assert killed, f"{job.operation}: the child never reached moment {point} ({seen[point - 1]})"
        check = check_file(work / "store.duckdb")
        assert check.ok, f"{job.operation} killed at {seen[point - 1]!r}: {check.problem}"
        yield point, seen[point - 1], work, recover(work)
    print(f"{job.operation}: {len(points)} kills at moments {points} of {len(seen)}")
    KILLED[job.operation] = (len(points), len(seen))


# -- state compared with the clean run ----------------------------------------------------------------


def cost_totals(store: Store) -> list[tuple[Any, ...]]:
    return store.query(
        "SELECT source, date_trunc('month', charge_period_start) AS month, count(*), round(sum(billed_cost), 6) "
        "FROM cost_lines GROUP BY ALL ORDER BY ALL"
    )


def loads(store: Store) -> list[tuple[Any, ...]]:
    return store.query("SELECT source, period_start, count(*) FROM loads GROUP BY ALL ORDER BY ALL")


def incidents(store: Store) -> list[tuple[Any, ...]]:
    return store.query(
        "SELECT monitor, granularity, series_key, kind, status, first_seen, last_seen, severity, round(impact, 4) "
        "FROM anomalies ORDER BY ALL"
    )


def open_store(folder: Path) -> Store:
    return Store(folder / "store.duckdb", lock_timeout=60)
