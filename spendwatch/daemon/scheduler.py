"""``spendwatch run``: one APScheduler scheduler per store, running every pass on its schedule.

Jobs (plain functions in ``spendwatch.daemon.jobs``, each with
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
* ``snapshot`` — a checked copy of the store once a day (``store.snapshots``; see ``spendwatch.store.snapshots``).

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
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from spendwatch.clock import Clock, SystemClock
from spendwatch.daemon.context import DaemonContext
from spendwatch.daemon.jobs import (
    alerts_job,
    collect_job,
    detect_job,
    digest_job,
    guard_job,
    housekeeping_job,
    killswitch_job,
    snapshot_job,
)
from spendwatch.daemon.lock import acquire_singleton
from spendwatch.daemon.sd_notify import SystemdNotifier
from spendwatch.errors import ConfigError
from spendwatch.store.locks import SingletonLock

if TYPE_CHECKING:
    from apscheduler.schedulers.background import BackgroundScheduler

    from spendwatch.config import Config

log = logging.getLogger("spendwatch.daemon")


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
    from spendwatch.daemon.health import HealthServer

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
