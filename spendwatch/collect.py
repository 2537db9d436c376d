"""The collection runner: one source's batches into the store, one transaction per period.

A source that fails mid-run keeps what it already committed (whole periods) and reports the error;
the period that failed keeps its previous data. Other sources run regardless.

A daemon that is stopping (``stop`` set) interrupts a collection at the next safe point: before the
next period is written, and inside the source wherever it counts a request or reports progress. What
was committed stays (whole periods); the source's change markers (fingerprints, manifest ETags) are
saved only after its last period, so the next start collects the rest again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from spendwatch.clock import Clock
from spendwatch.collectors.base import (
    SOURCES,
    CollectWindow,
    CostBatch,
    JobBatch,
    Problem,
    ProgressCallback,
    SourceConfig,
    SourceContext,
)
from spendwatch.errors import Interrupted, SpendwatchError, UserError
from spendwatch.store import Store

log = logging.getLogger("spendwatch.collect")


@dataclass
class SourceRun:
    """What one collection of one source did."""

    source: str
    started: datetime
    seconds: float = 0.0
    periods: int = 0
    cost_rows: int = 0
    replaced_rows: int = 0
    jobs: int = 0
    problems: list[str] = field(default_factory=list)
    error: str | None = None
    # True when the error is the user's to fix (bad file, bad config): the CLI exits 2, not 1.
    user_error: bool = False
    # True when the daemon's stop interrupted it at a safe point (not a failure; the next run resumes).
    interrupted: bool = False
    # True when some problem is the user's to fix (a malformed file or manifest).
    user_problems: bool = False
    counters: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.problems


def collect_source(
    source_config: SourceConfig,
    store: Store,
    clock: Clock,
    *,
    since: datetime | None = None,
    clients: dict[str, Any] | None = None,
    progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
) -> SourceRun:
    """Run one source and write what it yields. Never raises for source failures: see ``error``."""
    now = clock.now()
    context = SourceContext(clock=clock, store=store, logger=log, clients=clients or {}, stop=stop)
    context.progress = _checked(progress, context)
    source = SOURCES.get(source_config.type)(source_config, context)
    window = CollectWindow(since=since or now - source_config.backfill, until=now)
    run = SourceRun(source=source_config.name, started=now)
    began = time.monotonic()
    run_id = store.start_run(f"collect:{source_config.name}")
    try:
        for batch in source.collect(window):
            context.checkpoint()
            _write(batch, run, store, source_config.name, context)
    except Interrupted:
        run.interrupted = True
        log.info("source %s: interrupted at a safe point after %d period(s)", source_config.name, run.periods)
    except SpendwatchError as exc:
        run.error = str(exc)
        run.user_error = isinstance(exc, UserError)
    except Exception as exc:  # a bug or an unexpected API answer must not stop other sources
        log.exception("source %s failed", source_config.name)
        run.error = f"{type(exc).__name__}: {exc}"
    run.seconds = time.monotonic() - began
    run.counters = dict(context.counters)
    status = "failed" if run.error else ("interrupted" if run.interrupted else ("partial" if run.problems else "ok"))
    store.finish_run(
        run_id,
        status=status,
        rows=run.cost_rows + run.jobs,
        detail={"periods": run.periods, "jobs": run.jobs, "problems": run.problems, **run.counters},
        error=run.error,
    )
    return run


def _checked(progress: ProgressCallback | None, context: SourceContext) -> ProgressCallback:
    """Progress reports are natural safe points (a file, a download, a page): check the stop there too."""

    def report(message: str) -> None:
        context.checkpoint()
        if progress is not None:
            progress(message)

    return report


def _write(
    batch: CostBatch | JobBatch | Problem, run: SourceRun, store: Store, name: str, context: SourceContext
) -> None:
    if isinstance(batch, Problem):
        # Info, not warning: the CLI prints each problem itself, and the run records them (status partial).
        log.info("source %s: %s: %s", name, batch.label, batch.message)
        run.problems.append(f"{batch.label}: {batch.message}")
        run.user_problems = run.user_problems or batch.user_error
        return
    if isinstance(batch, JobBatch):
        run.jobs += store.upsert_jobs(name, batch.jobs)
        context.progress(f"{batch.label}: {batch.jobs.num_rows} job record(s)")
        return
    result = store.replace_cost_lines(
        name, batch.period_start, batch.period_end, batch.lines, fingerprint=batch.fingerprint
    )
    run.periods += 1
    run.cost_rows += result.rows
    run.replaced_rows += result.replaced_rows
    context.progress(f"{batch.label}: {result.rows} line(s) stored, {result.replaced_rows} replaced")


def collect_all(
    sources: Iterable[SourceConfig],
    store: Store,
    clock: Clock,
    *,
    clients: dict[str, Any] | None = None,
    progress: ProgressCallback | None = None,
) -> list[SourceRun]:
    return [collect_source(s, store, clock, clients=clients, progress=progress) for s in sources if s.enabled]
