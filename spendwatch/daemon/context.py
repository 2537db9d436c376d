"""What every daemon job gets: config, store, clock, clients, the stop flag, and nudges to other jobs."""

from __future__ import annotations

import threading
import time as _time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from spendwatch.clock import Clock

if TYPE_CHECKING:
    from apscheduler.schedulers.background import BackgroundScheduler

    from spendwatch.config import Config
    from spendwatch.store import Store


@dataclass
class DaemonContext:
    """What every job gets: config, store, clock, clients, the stop flag, and the scheduler to nudge."""

    config: Config
    store: Store
    clock: Clock
    clients: dict[str, Any] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    scheduler: BackgroundScheduler | None = None
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    initial_pass: threading.Event = field(default_factory=threading.Event)
    running: dict[str, float] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    rerun: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _first_collections: set[str] = field(default_factory=set)

    def nudge(self, job_id: str) -> None:
        """Run ``job_id`` now; if it is running, once more right after it finishes (never twice at once)."""
        if self.scheduler is None or self.stop.is_set():
            return
        with self._lock:
            if job_id in self.running:
                self.rerun.add(job_id)
                return
        job = self.scheduler.get_job(job_id)
        if job is not None:
            job.modify(next_run_time=datetime.now(UTC))

    def finished(self, job_id: str) -> None:
        with self._lock:
            again = job_id in self.rerun
            self.rerun.discard(job_id)
        if again:
            self.nudge(job_id)

    @contextmanager
    def tracking(self, job: str) -> Iterator[None]:
        with self._lock:
            self.running[job] = _time.monotonic()
        try:
            yield
        finally:
            with self._lock:
                self.running.pop(job, None)

    def running_jobs(self) -> list[str]:
        with self._lock:
            return sorted(self.running)
