"""The daemon's jobs: plain module-level functions (APScheduler references them by name).

Each runs its pass through ``_guarded``, which logs it, records it in ``runs`` and never lets it raise.
"""

from __future__ import annotations

import logging
import time as _time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from spendwatch.daemon.context import DaemonContext
from spendwatch.errors import Interrupted, SpendwatchError

if TYPE_CHECKING:
    from spendwatch.store import Store

log = logging.getLogger("spendwatch.daemon")


# -- jobs: plain module-level functions (APScheduler references them by name) --------------------------


def _guarded(ctx: DaemonContext, job: str, body: Callable[[], dict[str, Any] | None], *, record: bool) -> None:
    """Run one job body: log it, record it, and never let it raise into the scheduler."""
    if ctx.stop.is_set():
        return
    began = _time.monotonic()
    failure: Exception | None = None
    detail: dict[str, Any] = {}
    run_id: int | None = None
    with ctx.tracking(job):
        try:
            # Recording the start is inside: a busy or damaged store fails this run, not the scheduler.
            run_id = ctx.store.start_run(job) if record else None
            detail = body() or {}
        except Exception as exc:
            failure = exc
    ctx.finished(job)
    seconds = round(_time.monotonic() - began, 3)
    if failure is not None:
        failures = ctx.failures.get(job, 0) + 1
        ctx.failures[job] = failures
        # A failure spendwatch explained (a source that kept failing, a digest not delivered, a busy or
        # damaged store) is its one line; only an unexpected exception (a bug) carries a traceback.
        explained = isinstance(failure, SpendwatchError | CollectionFailed | DigestNotSent)
        log.error(
            "job %s failed (%d in a row): %s; it runs again at its next time",
            job, failures, failure, exc_info=None if explained else failure,
            extra={"event": "job-failed", "job": job, "consecutive_failures": failures, "seconds": seconds},
        )  # fmt: skip
        if run_id is not None:
            _finish(ctx, run_id, status="failed", error=f"{type(failure).__name__}: {failure}")
        return
    if detail.get("interrupted"):
        log.info(
            "job %s stopped at a safe point after %.1fs (the daemon is stopping; the next run resumes)", job, seconds,
            extra={"event": "job-interrupted", "job": job, "seconds": seconds, **detail},
        )  # fmt: skip
        if run_id is not None:
            _finish(ctx, run_id, status="interrupted", detail=detail)
        return
    ctx.failures[job] = 0
    log.info(
        "job %s done in %.1fs", job, seconds, extra={"event": "job-done", "job": job, "seconds": seconds, **detail}
    )
    if run_id is not None:
        _finish(ctx, run_id, status=str(detail.pop("status", "ok")), detail=detail, rows=detail.get("rows"))


def _finish(ctx: DaemonContext, run_id: int, **kwargs: Any) -> None:
    try:
        ctx.store.finish_run(run_id, **kwargs)
    except Exception:
        log.exception("could not record the end of run %d", run_id)


def collect_job(ctx: DaemonContext, source_name: str) -> None:
    from spendwatch.collect import collect_source

    job = f"collect:{source_name}"

    def body() -> dict[str, Any]:
        source = ctx.config.source(source_name)
        run = collect_source(source, ctx.store, ctx.clock, clients=ctx.clients.get(source_name), stop=ctx.stop)
        if run.interrupted:
            return {"source": source_name, "interrupted": True, "cost_rows": run.cost_rows, "jobs": run.jobs}
        if run.error:
            named = run.error.startswith(f"source {source_name}")
            raise CollectionFailed(run.error if named else f"source {source_name}: {run.error}")
        if (run.cost_rows or run.jobs) and ctx.config.daemon.detect_after_collection:
            ctx.nudge("detect")
        return {"source": source_name, "cost_rows": run.cost_rows, "jobs": run.jobs, "problems": len(run.problems)}

    try:
        _guarded(ctx, job, body, record=False)  # collect_source records its own run
    finally:
        _first_collection_done(ctx, source_name)


class CollectionFailed(Exception):
    """A source reported an error (already recorded in ``runs`` by the collection runner)."""


def _first_collection_done(ctx: DaemonContext, source_name: str) -> None:
    with ctx._lock:
        ctx._first_collections.add(source_name)
        everyone = {s.name for s in ctx.config.sources if s.enabled} <= ctx._first_collections
    if everyone and not ctx.initial_pass.is_set():
        ctx.nudge("detect")


def detect_job(ctx: DaemonContext) -> None:
    from spendwatch.detect.runner import run_detection

    def body() -> dict[str, Any]:
        try:
            run = run_detection(ctx.config, ctx.store, ctx.clock, stop=ctx.stop)
        except Interrupted:
            return {"interrupted": True}
        ctx.nudge("killswitch")
        ctx.nudge("alerts")
        return {"series_scored": run.series_scored, "opened": run.opened}

    try:
        _guarded(ctx, "detect", body, record=False)  # run_detection records its own run
    finally:
        with ctx._lock:
            collected = {s.name for s in ctx.config.sources if s.enabled} <= ctx._first_collections
        if collected and not ctx.initial_pass.is_set():
            ctx.initial_pass.set()
            ctx.nudge("digest-catchup")  # a digest held back at start goes out now


def killswitch_job(ctx: DaemonContext) -> None:
    from spendwatch.killswitch.engine import run_killswitch

    def body() -> dict[str, Any]:
        run = run_killswitch(ctx.config, ctx.store, ctx.clock, clients=ctx.clients.get("killswitch"))
        ctx.nudge("alerts")
        return {"summary": run.summary(), "rows": len(run.planned) + len(run.executed)}

    _guarded(ctx, "killswitch", body, record=True)


def alerts_job(ctx: DaemonContext) -> None:
    from spendwatch.notify.alerts import run_alerts

    def body() -> dict[str, Any]:
        run = run_alerts(ctx.config, ctx.store, ctx.clock, clients=ctx.clients.get("notify"), stop=ctx.stop)
        detail: dict[str, Any] = {"sent": run.sent, "failed": run.failed, "rows": run.sent}
        if run.failed:
            detail["status"] = "partial"
            detail["errors"] = run.errors[:10]
        return detail

    _guarded(ctx, "alerts", body, record=True)


# -- runaway-job guard (spendwatch.guard, owned by the guard) -----------------------------------------


def guard_job(ctx: DaemonContext) -> None:
    from spendwatch.guard.engine import guard_job_body

    def body() -> dict[str, Any]:
        detail, alert_now = guard_job_body(ctx.config, ctx.store, ctx.clock, ctx.clients)
        if alert_now:
            ctx.nudge("alerts")
        return detail

    _guarded(ctx, "guard", body, record=True)


# -- end runaway-job guard ------------------------------------------------------------------------------


def digest_job(ctx: DaemonContext) -> None:
    from spendwatch.notify.send import due_day, send_digest

    daemon = ctx.config.daemon
    now = ctx.clock.now()
    day = due_day(now, daemon.timezone, daemon.digest_at, daemon.digest_days)
    if day is None:
        return
    waited = datetime.now(UTC) - ctx.started_at
    if not ctx.initial_pass.is_set() and waited < daemon.startup_wait:
        log.info("digest %s is due; waiting for the first collection and detection to finish", day)
        return

    def body() -> dict[str, Any]:
        outcome = send_digest(ctx.config, ctx.store, ctx.clock, day, clients=ctx.clients.get("notify"), stop=ctx.stop)
        log.info("%s", outcome.message, extra={"event": "digest", "day": day.isoformat(), "status": outcome.status})
        if outcome.status == "failed":
            raise DigestNotSent(outcome.message)
        return {"day": day.isoformat(), "digest_status": outcome.status, "rows": len(outcome.recipients)}

    # Checks of a day already done (every few minutes) are neither logged at info nor recorded as runs.
    status = _digest_row_status(ctx, day)
    if status in ("sent", "unconfirmed", "superseded"):
        log.debug("digest %s: already %s", day, status)
        return
    _guarded(ctx, "digest", body, record=True)


class DigestNotSent(Exception):
    """The digest could not be delivered this time (the ledger holds the next attempt time)."""


def _digest_row_status(ctx: DaemonContext, day: Any) -> str | None:
    rows = ctx.store.query("SELECT status FROM digests WHERE day = ?", [day])
    return str(rows[0][0]) if rows else None


def housekeeping_job(ctx: DaemonContext) -> None:
    def body() -> dict[str, Any]:
        return housekeeping(ctx.store, ctx.clock.now() - ctx.config.store.retention)

    _guarded(ctx, "housekeeping", body, record=True)


def snapshot_job(ctx: DaemonContext) -> None:
    """A checked copy of the store once a day (``spendwatch store restore`` brings it back)."""
    from spendwatch.store.snapshots import snapshot_due, snapshot_folder, take_snapshot

    store = ctx.config.store
    folder = snapshot_folder(store.path, store.snapshots.folder)
    if not store.path.exists() or not snapshot_due(folder, ctx.clock.now()):
        return

    def body() -> dict[str, Any]:
        snapshot = take_snapshot(
            store.path,
            folder,
            ctx.clock.now(),
            keep=store.snapshots.keep,
            lock_timeout=store.lock_timeout.total_seconds(),
        )
        return {"snapshot": str(snapshot.path)}

    _guarded(ctx, "snapshot", body, record=True)


# (name reported, table, condition). Cost lines are deleted from ``cost_line_rows`` (``cost_lines`` is a
# view over it and ``cost_line_dims``); the dims rows stay, harmless when no line uses them any more.
_RETENTION = (
    ("cost_lines", "cost_line_rows", "charge_period_end < ?"),
    ("loads", "loads", "period_end < ?"),
    ("runs", "runs", "started_at < ? AND finished_at IS NOT NULL"),
    ("alerts_sent", "alerts_sent", "sent_at < ?"),
    ("alert_failures", "alert_failures", "last_failed_at < ?"),
    ("digests", "digests", "day < CAST(? AS DATE)"),
)


def housekeeping(store: Store, cutoff: datetime) -> dict[str, Any]:
    """Delete what is older than the retention horizon; returns rows deleted per table."""
    deleted: dict[str, Any] = {}
    with store.transaction() as con:
        for name, table, condition in _RETENTION:
            row = con.execute(f"SELECT count(*) FROM {table} WHERE {condition}", [cutoff]).fetchone()
            count = int(row[0]) if row else 0
            if count:
                con.execute(f"DELETE FROM {table} WHERE {condition}", [cutoff])
            deleted[name] = count
    deleted["rows"] = sum(v for v in deleted.values() if isinstance(v, int))
    deleted["cutoff"] = cutoff.isoformat()
    return deleted
