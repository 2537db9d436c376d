"""The four passes the crash tests kill, on a small estate, and the hooks that pick the moment.

Imported by the forkserver that forks every child (so a child starts in milliseconds with all of
spendwatch loaded) and by the test that re-runs each pass after the kill.

A *moment* is an event the child reaches: every SQL statement on any DuckDB connection (inside a
transaction: after BEGIN, between DELETE and INSERT, before COMMIT …), every AWS call before it is
sent and after its answer arrived, every SMTP step before and after (so "the mail was accepted but
the ledger does not know yet" is a moment too). A counting run lists them; a kill run stops at the
N-th, tells the parent, and waits to be SIGKILLed.
"""

from __future__ import annotations

import functools
import json
import smtplib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from spendwatch.clock import SystemClock
from spendwatch.collect import collect_source
from spendwatch.config import Config, load_config
from spendwatch.detect.runner import run_detection
from spendwatch.killswitch.engine import run_killswitch
from spendwatch.notify.send import send_digest
from spendwatch.store import Store
from tests.doubles.clock import FixedClock
from tests.doubles.focus_files import month_rows, write_csv
from tests.killswitch.factories import REGION, incident, rule, settings

NOW = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)

# What the passes import on first use (the digest's forecast model, money formats, alert modules). The
# forkserver preloads them as a daemon that has sent one digest holds them: otherwise every child of
# a crash test would spend seconds importing statsmodels before it reached its first moment.
LAZY_IMPORTS = (
    "statsmodels.tsa.exponential_smoothing.ets",
    "babel.numbers",
    "pyarrow.parquet",
    "spendwatch.notify.alerts",
    "spendwatch.notify.lifecycle",
    "spendwatch.notify.links",
)
DAY = NOW.date()
OPERATIONS = ("collect", "detect", "killswitch", "digest")


@dataclass(frozen=True)
class Job:
    """One child's work (pickled to the forkserver's child)."""

    operation: str
    folder: str
    kill_at: int | None = None  # None: a counting run that writes the moments to ``events_file``
    events_file: str = ""
    endpoint: str = ""  # the AWS endpoint (a counting proxy in front of moto) for the kill switch
    instances: tuple[str, ...] = ()
    smtp_port: int = 0


# -- the estate -------------------------------------------------------------------------------------


def write_workspace(folder: Path, *, smtp_port: int = 0) -> Path:
    """Config and FOCUS files of a small estate: three months of exports and 14 simulated days.

    ``collect`` loads the exports only (three periods, a fingerprint); the simulated days are loaded
    once into the template that ``detect`` and ``digest`` start from.
    """
    for month, days, cost in (("2026-09", 30, 4.0), ("2026-10", 31, 5.0), ("2026-11", 19, 6.0)):
        write_csv(folder / "exports" / f"{month}.csv", month_rows(month, days, cost))
    config = f"""store:
  path: store.duckdb
  snapshots: {{keep: 0}}
sources:
  - {{name: exports, type: focus, path: exports}}
  - {{name: estate, type: simulated, days: 14, end: "2026-11-20T08:00:00Z", settle_lag: 1h}}
monitors:
  - {{name: total, dimensions: [provider], granularity: [daily]}}
  - {{name: accounts, dimensions: [provider, sub_account_id], granularity: [daily]}}
notify:
  from: "spendwatch <spendwatch@example.com>"
  channels:
    - {{name: mail, type: smtp, host: 127.0.0.1, port: {smtp_port or 25}, security: none}}
  digest: {{recipients: [finops@example.com], charts: false}}
"""
    path = folder / "spendwatch.yaml"
    path.write_text(config)
    return path


def config_of(folder: Path) -> Config:
    return load_config(folder / "spendwatch.yaml")


def store_of(folder: Path, clock: Any) -> Store:
    return Store(folder / "store.duckdb", clock=clock, lock_timeout=120)


# -- the passes -------------------------------------------------------------------------------------


def collect(folder: Path, sources: tuple[str, ...] = ("exports",)) -> None:
    config, clock = config_of(folder), FixedClock(NOW)
    store = store_of(folder, clock)
    for name in sources:
        run = collect_source(config.source(name), store, clock, since=NOW - timedelta(days=120))
        assert run.error is None, run.error


def detect(folder: Path) -> None:
    clock = FixedClock(NOW)
    run_detection(config_of(folder), store_of(folder, clock), clock)


@functools.cache
def aws_session() -> Any:
    """A boto3 session with the EC2 model already loaded (building it takes a second on a busy machine).

    Made once at import, so the forkserver holds it warm and every child inherits a copy.
    """
    import boto3

    session = boto3.Session(region_name=REGION)
    session.client("ec2", endpoint_url="http://127.0.0.1:9")  # loads and caches the service model
    return session


def killswitch(folder: Path, endpoint: str, instances: tuple[str, ...], session: Any = None) -> Any:
    session = session or aws_session()
    return run_killswitch(
        settings([rule(how="enforce")], endpoint=endpoint),
        store_of(folder, SystemClock()),
        SystemClock(),
        clients={"aws_session": session},
        incidents=[incident(list(instances))],
    )


def digest(folder: Path) -> Any:
    clock = FixedClock(NOW)
    return send_digest(config_of(folder), store_of(folder, clock), clock, DAY)


# -- moments ----------------------------------------------------------------------------------------


@dataclass
class Moments:
    """Counts events; at ``kill_at`` it tells the parent and waits for the SIGKILL."""

    kill_at: int | None
    reached: Callable[[], None]
    seen: list[str] = field(default_factory=list)
    count: int = 0

    def tick(self, label: str) -> None:
        self.count += 1
        if self.kill_at is None:
            self.seen.append(label)
        elif self.count == self.kill_at:
            self.reached()
            time.sleep(600)  # the parent kills us here


class _CountedConnection:
    """A DuckDB connection whose statements are moments (everything else passes straight through)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, moments: Moments) -> None:
        self._con = con
        self._moments = moments

    def execute(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        self._moments.tick("sql " + " ".join(str(sql).split()[:2]))
        self._con.execute(sql, *args, **kwargs)
        return self

    def sql(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        self._moments.tick("sql " + " ".join(str(sql).split()[:2]))
        return self._con.sql(sql, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


def install(moments: Moments) -> None:
    real_connect = duckdb.connect

    def connect(*args: Any, **kwargs: Any) -> Any:
        return _CountedConnection(real_connect(*args, **kwargs), moments)

    duckdb.connect = connect  # type: ignore[assignment]
    for step in ("mail", "rcpt", "data"):
        _wrap_smtp(step, moments)


def _wrap_smtp(step: str, moments: Moments) -> None:
    real = getattr(smtplib.SMTP, step)

    def wrapped(self: smtplib.SMTP, *args: Any, **kwargs: Any) -> Any:
        moments.tick(f"smtp {step}")
        answer = real(self, *args, **kwargs)
        moments.tick(f"smtp {step} answered")
        return answer

    setattr(smtplib.SMTP, step, wrapped)


def child(job: Job, ready: Any) -> None:
    """The forkserver child: install the moments, run the pass, and (counting) write what it saw."""
    moments = Moments(job.kill_at, ready.set)
    install(moments)
    folder = Path(job.folder)
    if job.operation == "collect":
        collect(folder)
    elif job.operation == "detect":
        detect(folder)
    elif job.operation == "killswitch":
        session = aws_session()
        session.events.register("before-call", lambda event_name, **_: moments.tick(event_name))
        session.events.register("after-call", lambda event_name, **_: moments.tick(event_name))
        killswitch(folder, job.endpoint, job.instances, session)
    elif job.operation == "digest":
        outcome = digest(folder)
        assert outcome.status == "sent", outcome.message
    if job.kill_at is None:
        Path(job.events_file).write_text(json.dumps(moments.seen))


aws_session()  # warm in the forkserver (see aws_session)
