"""``spendwatch run``: one APScheduler scheduler per store, running every pass on its schedule.

Jobs (plain functions in ``spendwatch.jobs``-style at the bottom of this module, each with
``max_instances=1``, ``coalesce=True`` and ``misfire_grace_time``):

* ``collect:<source>`` — every ``source.every``; a collection that stored data nudges ``detect``;
* ``detect`` — after collections (and every ``daemon.detect_every`` as a floor); nudges the kill
  switch and alerts;
* ``killswitch`` — every ``daemon.killswitch_every`` (when a ``killswitch:`` section exists);
* ``alerts`` — every ``daemon.alerts_every`` and after detection / the kill switch;
* ``digest`` — a cron at ``daemon.digest_at`` in ``daemon.timezone`` plus ``digest-catchup`` every
  ``daemon.digest_check_every`` (a late start, a retry after a failed delivery); the ledger makes
  both safe to run at once (see ``notify.ledger``);
* ``housekeeping`` — daily at ``daemon.housekeeping_at``: retention and a checkpoint;
* ``snapshot`` — a checked copy of the store once a day (``store.snapshots``; see ``spendwatch.snapshots``).

A job that fails is logged with its context, recorded in ``runs`` (metrics show consecutive
failures) and simply runs again at its next time; nothing a job raises stops the daemon.
SIGTERM/SIGINT stop the scheduler, give running jobs ``shutdown_grace`` to finish, then exit 0
(abandoning a job mid-write is safe: every store write is one transaction). A ``SingletonLock``
beside the store makes a second daemon on the same store refuse to start.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import sys
import threading
import time as _time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BeforeValidator, Field, field_validator

from spendwatch.clock import Clock, SystemClock
from spendwatch.config_types import Duration
from spendwatch.errors import ConfigError, Interrupted, SpendwatchError, StoreAccessError, UserError
from spendwatch.plugins import StrictModel
from spendwatch.store.locks import LockTimeout, SingletonLock

if TYPE_CHECKING:
    from apscheduler.schedulers.background import BackgroundScheduler

    from spendwatch.config import Config
    from spendwatch.store import Store

log = logging.getLogger("spendwatch.daemon")


# -- config ------------------------------------------------------------------------------------------


def _parse_clock_time(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return time.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{value!r} is not a time of day; use HH:MM, e.g. '08:00'") from None
    return value


ClockTime = Annotated[time, BeforeValidator(_parse_clock_time)]


class SpendMetricsConfig(StrictModel):
    """The spend gauges on /metrics (``spend_metrics``): label values are bounded, the rest is ``other``."""

    enabled: bool = Field(default=True, description="export spend, incident excess, budget and guard burn gauges")
    top_accounts: int = Field(
        default=20, ge=1, le=500, description="accounts per provider and currency with their own label (rest: other)"
    )
    top_providers: int = Field(default=10, ge=1, le=50, description="providers with their own label (rest: other)")
    top_platforms: int = Field(default=10, ge=1, le=50, description="guard platforms with their own label")
    max_currencies: int = Field(
        default=5, ge=1, le=20, description="currencies exported (money in different currencies is never summed)"
    )
    refresh: Duration = Field(
        default=timedelta(minutes=5), description="scrapes within this reuse the last figures (bills change hourly)"
    )


class HealthConfig(StrictModel):
    enabled: bool = Field(default=True, description="serve /healthz, /readyz and /metrics")
    bind: str = Field(default="127.0.0.1", description="address to listen on (0.0.0.0 in a container)")
    port: int = Field(default=9464, ge=0, le=65535, description="TCP port (0: any free port, logged)")
    stale_after: Duration = Field(
        default=timedelta(0),
        description="/readyz fails when a source's last good collection is older (0: 3 × its interval + 10m)",
    )
    spend: SpendMetricsConfig = Field(default_factory=SpendMetricsConfig, description="spend gauges on /metrics")


class DaemonConfig(StrictModel):
    """How ``spendwatch run`` schedules the passes."""

    timezone: str = Field(default="UTC", description="IANA zone of the digest time and dates, e.g. Europe/Madrid")
    digest_at: ClockTime = Field(default=time(8, 0), description="local time the daily digest goes out")
    digest_days: str = Field(default="*", description="days it goes out: '*', 'mon-fri', 'mon,wed,fri'")
    digest_check_every: Duration = Field(
        default=timedelta(minutes=5), description="how often a missed or failed digest is looked at again"
    )
    detect_after_collection: bool = Field(default=True, description="score as soon as a collection stored data")
    detect_every: Duration = Field(default=timedelta(hours=6), description="score at least this often anyway")
    killswitch_every: Duration = Field(default=timedelta(minutes=15), description="the kill-switch pass")
    alerts_every: Duration = Field(default=timedelta(minutes=5), description="send (and retry) immediate alerts")
    housekeeping_at: ClockTime = Field(default=time(3, 30), description="local time of the daily retention pass")
    misfire_grace: Duration = Field(
        default=timedelta(minutes=15), description="a run late by less than this still runs (e.g. after a pause)"
    )
    startup_wait: Duration = Field(
        default=timedelta(minutes=30),
        description="at start, hold the digest until the first collection and detection finished (at most this long)",
    )
    shutdown_grace: Duration = Field(
        default=timedelta(seconds=7), description="on SIGTERM, how long running jobs may finish before exit"
    )
    max_workers: int = Field(default=4, ge=1, le=32, description="jobs that may run at the same time")
    health: HealthConfig = Field(default_factory=HealthConfig)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone (e.g. UTC, Europe/Madrid)") from None
        return value

    @field_validator("digest_days")
    @classmethod
    def _days(cls, value: str) -> str:
        from spendwatch.notify.send import parse_days

        parse_days(value)
        return value

    @field_validator("shutdown_grace")
    @classmethod
    def _grace(cls, value: timedelta) -> timedelta:
        if value > timedelta(seconds=9):
            raise ValueError("must be at most 9s: the daemon promises to exit within 10s of SIGTERM")
        return value

    @field_validator(
        "digest_check_every", "detect_every", "killswitch_every", "alerts_every", "misfire_grace", "startup_wait"
    )
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value < timedelta(seconds=1):
            raise ValueError("must be at least 1s")
        return value


# -- systemd -----------------------------------------------------------------------------------------


class SystemdNotifier:
    """``sd_notify``: datagrams to ``$NOTIFY_SOCKET`` (READY=1, WATCHDOG=1, STATUS=…, STOPPING=1).

    A no-op when the variable is unset (not under systemd ``Type=notify``).
    """

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        watchdog_usec = env.get("WATCHDOG_USEC", "")
        watchdog_pid = env.get("WATCHDOG_PID", "")
        wanted = watchdog_usec.isdigit() and (not watchdog_pid or watchdog_pid == str(os.getpid()))
        self.watchdog_interval: float | None = int(watchdog_usec) / 2e6 if wanted else None

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, *states: str) -> bool:
        if not self.address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(states).encode(), self.address)
        except OSError as exc:
            log.warning("sd_notify to %s failed: %s", self.address, exc)
            return False
        return True


# -- the running daemon --------------------------------------------------------------------------------


class AlreadyRunning(UserError):
    """Another daemon holds this store."""


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


def lock_path(store_path: Path) -> Path:
    return store_path.with_name(store_path.name + ".daemon.lock")


def acquire_singleton(store_path: Path) -> SingletonLock:
    from spendwatch.store import describe_os_error

    lock = SingletonLock(lock_path(store_path))
    try:
        store_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreAccessError(f"store {store_path}: {describe_os_error(exc, store_path.parent)}") from None
    try:
        lock.acquire()
    except OSError as exc:
        raise StoreAccessError(f"store {store_path}: {describe_os_error(exc, lock.path)}") from None
    except LockTimeout as exc:
        raise AlreadyRunning(
            f"another spendwatch daemon (pid {exc.args[0] if exc.args else 'unknown'}) is already running on store "
            f"{store_path}; one daemon per store (lock file {lock.path})"
        ) from None
    return lock


def run_daemon(
    config: Config,
    *,
    clock: Clock | None = None,
    clients: dict[str, Any] | None = None,
    install_signals: bool = True,
    stop: threading.Event | None = None,
) -> int:
    """Run until SIGTERM/SIGINT (or ``stop``); returns the exit code (0)."""
    from spendwatch.store import Store

    store_config = config.store
    lock = acquire_singleton(store_config.path)
    clock = clock or SystemClock()
    try:
        store = Store(
            store_config.path,
            lock_timeout=store_config.lock_timeout.total_seconds(),
            clock=clock,
            memory_limit=store_config.memory_limit,
        )
        store.migrate()
    except BaseException:
        lock.release()
        raise
    # APScheduler narrates every job addition at info; its warnings (skipped runs) still come through.
    logging.getLogger("apscheduler.scheduler").setLevel(max(logging.WARNING, logging.getLogger().level))
    ctx = DaemonContext(config, store, clock, clients=dict(clients or {}), stop=stop or threading.Event())
    notifier = SystemdNotifier()
    health = page = None
    try:  # before the signal handlers: a port in use fails the start with nothing of the process changed
        health = _start_health(ctx)
        page = _start_action_page(ctx)
    except BaseException:
        if health is not None:
            health.stop()
        lock.release()
        raise
    if install_signals:
        _install_signal_handlers(ctx.stop)
    scheduler = build_scheduler(ctx)
    scheduler.start()
    log.info(
        "spendwatch daemon started (pid %d): store %s, %d source(s), digest at %s %s",
        os.getpid(), store_config.path, len(config.sources), config.daemon.digest_at.strftime("%H:%M"),
        config.daemon.timezone,
        extra={"event": "started", "pid": os.getpid()},
    )  # fmt: skip
    if not config.notify.channels:
        log.info("notify: no channels configured; digests are written to %s", store_config.path.parent / "outbox")
    notifier.notify("READY=1", f"STATUS=running; store {store_config.path}", f"MAINPID={os.getpid()}")
    watchdog = _start_watchdog(ctx, notifier, scheduler)
    try:
        while not ctx.stop.wait(0.5):
            pass
    finally:
        if page is not None:
            page.stop()
        code = _shutdown(ctx, scheduler, notifier, health, lock, watchdog)
    return code


def _install_signal_handlers(stop: threading.Event) -> None:
    def handle(signum: int, _: Any) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name, extra={"event": "signal"})
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def _start_health(ctx: DaemonContext) -> Any:
    health_config = ctx.config.daemon.health
    if not health_config.enabled:
        return None
    from spendwatch.health import HealthServer

    try:
        server = HealthServer(ctx.config, ctx.store, ctx.clock, bind=health_config.bind, port=health_config.port)
    except OSError as exc:
        where = f"{health_config.bind}:{health_config.port}"
        raise ConfigError(f"daemon.health: cannot listen on {where}: {_why(exc)}") from None
    server.scheduler_alive = lambda: ctx.scheduler is not None and bool(ctx.scheduler.running)
    server.start()
    log.info("health and metrics on http://%s:%d/ (/healthz /readyz /metrics)", *server.address)
    return server


def _start_action_page(ctx: DaemonContext) -> Any:
    """The digest's action page (notify.action_page), on its own listener; ``None`` when off."""
    from spendwatch.notify.web import action_page

    settings = ctx.config.notify.action_page
    try:
        page = action_page(ctx.config, ctx.store, ctx.clock)
    except OSError as exc:
        where = f"{settings.bind}:{settings.port}"
        raise ConfigError(f"notify.action_page: cannot listen on {where}: {_why(exc)}") from None
    if page is not None:
        page.start()
        log.info("action page on http://%s:%d/a/ (links: %s)", ctx.config.notify.action_page.bind, page.port,
                 ctx.config.notify.action_page.base_url)  # fmt: skip
    return page


def _why(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "the port is in use (another daemon or program?); choose daemon.health.port, or 0 for any free port"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "the address is not one of this machine's (daemon.health.bind)"
    if exc.errno == errno.EACCES:
        return "permission denied (ports below 1024 need privileges)"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the address ({exc.strerror})"
    return exc.strerror or str(exc)


def _start_watchdog(ctx: DaemonContext, notifier: SystemdNotifier, scheduler: Any) -> threading.Thread | None:
    interval = notifier.watchdog_interval
    if not notifier.enabled or interval is None:
        return None

    def ping() -> None:
        while not ctx.stop.wait(interval):
            if scheduler.running:  # a wedged scheduler stops the pings, and systemd restarts us
                notifier.notify("WATCHDOG=1")

    thread = threading.Thread(target=ping, name="sd-watchdog", daemon=True)
    thread.start()
    return thread


def _shutdown(
    ctx: DaemonContext,
    scheduler: Any,
    notifier: SystemdNotifier,
    health: Any,
    lock: SingletonLock,
    watchdog: threading.Thread | None,
) -> int:
    began = _time.monotonic()
    ctx.stop.set()
    notifier.notify("STOPPING=1", "STATUS=stopping")
    try:
        scheduler.shutdown(wait=False)
    except Exception:
        log.debug("scheduler was not running")
    deadline = began + ctx.config.daemon.shutdown_grace.total_seconds()
    while ctx.running_jobs() and _time.monotonic() < deadline:
        _time.sleep(0.05)
    abandoned = ctx.running_jobs()
    if health is not None:
        health.stop()
    lock.release()
    seconds = _time.monotonic() - began
    if abandoned:
        log.warning(
            "stopped after %.1fs, abandoning %s (each store write is one transaction; the next run repairs it)",
            seconds, ", ".join(abandoned), extra={"event": "stopped", "abandoned": abandoned},
        )  # fmt: skip
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)  # worker threads cannot be interrupted; do not wait for them
    log.info("stopped cleanly in %.1fs", seconds, extra={"event": "stopped", "seconds": round(seconds, 3)})
    return 0


# -- the scheduler -------------------------------------------------------------------------------------


def build_scheduler(ctx: DaemonContext) -> BackgroundScheduler:
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    daemon = ctx.config.daemon
    scheduler = BackgroundScheduler(
        timezone=UTC,
        executors={"default": ThreadPoolExecutor(max_workers=daemon.max_workers)},
        job_defaults={
            "max_instances": 1,
            "coalesce": True,
            "misfire_grace_time": int(daemon.misfire_grace.total_seconds()),
        },
    )
    ctx.scheduler = scheduler
    now = datetime.now(UTC)
    zone = ZoneInfo(daemon.timezone)

    def add(func: Callable[..., None], job_id: str, trigger: Any, *args: Any, first: datetime | None = None) -> None:
        extra = {} if first is None else {"next_run_time": first}  # None would add the job paused
        scheduler.add_job(func, trigger, args=[ctx, *args], id=job_id, name=job_id, **extra)

    enabled = [s for s in ctx.config.sources if s.enabled]
    for index, source in enumerate(enabled):
        # Stagger first runs a little so several sources do not start in the same second.
        first = now + timedelta(seconds=2 * index)
        add(
            collect_job,
            f"collect:{source.name}",
            IntervalTrigger(seconds=_seconds(source.every)),
            source.name,
            first=first,
        )
    if not enabled:
        ctx.initial_pass.set()
    add(detect_job, "detect", IntervalTrigger(seconds=_seconds(daemon.detect_every)))
    if getattr(ctx.config, "killswitch", None) is not None:
        add(killswitch_job, "killswitch", IntervalTrigger(seconds=_seconds(daemon.killswitch_every)))
    add(alerts_job, "alerts", IntervalTrigger(seconds=_seconds(daemon.alerts_every)))
    # -- runaway-job guard (spendwatch.guard, owned by the guard): its own fast schedule, guard.every --
    from spendwatch.guard.engine import guard_interval

    guard_every = guard_interval(ctx.config)
    if guard_every is not None:
        add(guard_job, "guard", IntervalTrigger(seconds=_seconds(guard_every)), first=now + timedelta(seconds=3))
    # -- end runaway-job guard --
    digest_cron = CronTrigger(
        day_of_week=_cron_days(daemon.digest_days),
        hour=daemon.digest_at.hour,
        minute=daemon.digest_at.minute,
        second=daemon.digest_at.second,
        timezone=zone,
    )
    add(digest_job, "digest", digest_cron)
    add(digest_job, "digest-catchup", IntervalTrigger(seconds=_seconds(daemon.digest_check_every)), first=now)
    add(
        housekeeping_job,
        "housekeeping",
        CronTrigger(hour=daemon.housekeeping_at.hour, minute=daemon.housekeeping_at.minute, timezone=zone),
    )
    if ctx.config.store.snapshots.keep:
        # A check every store.snapshots.check_every (and soon after start): a snapshot once the newest is a day old.
        every = IntervalTrigger(seconds=_seconds(ctx.config.store.snapshots.check_every))
        add(snapshot_job, "snapshot", every, first=now + timedelta(seconds=5))
    return scheduler


def _seconds(value: timedelta) -> int:
    return max(1, int(value.total_seconds()))


def _cron_days(spec: str) -> str:
    return "*" if spec.strip() in ("", "*") else spec.strip().lower()


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
    from spendwatch.snapshots import snapshot_due, snapshot_folder, take_snapshot

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


_RETENTION = (
    ("cost_lines", "charge_period_end < ?"),
    ("loads", "period_end < ?"),
    ("runs", "started_at < ? AND finished_at IS NOT NULL"),
    ("alerts_sent", "sent_at < ?"),
    ("alert_failures", "last_failed_at < ?"),
    ("digests", "day < CAST(? AS DATE)"),
)


def housekeeping(store: Store, cutoff: datetime) -> dict[str, Any]:
    """Delete what is older than the retention horizon; returns rows deleted per table."""
    deleted: dict[str, Any] = {}
    with store.transaction() as con:
        for table, condition in _RETENTION:
            row = con.execute(f"SELECT count(*) FROM {table} WHERE {condition}", [cutoff]).fetchone()
            count = int(row[0]) if row else 0
            if count:
                con.execute(f"DELETE FROM {table} WHERE {condition}", [cutoff])
            deleted[table] = count
    deleted["rows"] = sum(v for v in deleted.values() if isinstance(v, int))
    deleted["cutoff"] = cutoff.isoformat()
    return deleted
