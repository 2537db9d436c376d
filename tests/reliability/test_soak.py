"""A short soak in virtual time: the daemon's jobs over three simulated days with random source faults.

``benchmarks/soak.py`` runs the real daemon (scheduler, health server, SMTP) for 30 simulated days on
a sped-up clock; this test runs the same job functions (``collect_job``, ``detect_job``,
``digest_job``, ``snapshot_job``) in the order the scheduler would, every simulated six hours, on a
``FixedClock`` it advances itself — so it takes seconds, and nothing depends on how fast the machine
is. Every step the exports are restated; a third of the collections fail (a seeded order): before
anything, or half-way (after the first month was stored).

Asserted: no job raises into the scheduler; every digest day is delivered exactly once, with no gap;
``/readyz``'s check is honest at every step (ready exactly when the last good collection is younger
than ``stale_after``); a snapshot a day; memory does not grow (RSS after the first simulated day vs
the last, with slack for the allocator).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest

from spendwatch.collectors.focus import FocusSource
from spendwatch.config import load_config
from spendwatch.daemon import DaemonContext, collect_job, detect_job, digest_job, snapshot_job
from spendwatch.daemon.health import readiness
from spendwatch.errors import SourceError
from spendwatch.store import Store
from spendwatch.store.snapshots import list_snapshots
from tests.doubles.clock import FixedClock
from tests.doubles.focus_files import month_rows, write_csv
from tests.doubles.smtp import SmtpServer

START = datetime(2026, 11, 20, 0, 30, tzinfo=UTC)
DAYS = 3
STEP = timedelta(hours=6)
STALE_AFTER = timedelta(hours=12)


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpServer]:
    server = SmtpServer(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def flaky(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A third of FOCUS collections fail, in a seeded order: before yielding, or half-way through."""
    plan = ["503", "503", "half-way", "half-way"] + ["ok"] * 8
    random.Random(14).shuffle(plan)
    happened: list[str] = []
    real = FocusSource.collect

    def collect(self: FocusSource, window: Any) -> Iterator[Any]:
        fault = plan[len(happened) % len(plan)]
        happened.append(fault)
        if fault == "503":
            raise SourceError(f"source {self.name}: injected fault: the API answered 503")
        for index, batch in enumerate(real(self, window)):
            if index == 1 and fault == "half-way":
                raise SourceError(f"source {self.name}: injected fault: the connection dropped half-way")
            yield batch

    monkeypatch.setattr(FocusSource, "collect", collect)
    return happened


def test_three_simulated_days_of_jobs_with_faults(tmp_path: Path, smtp: SmtpServer, flaky: list[str]) -> None:
    exports = tmp_path / "exports"
    config_path = tmp_path / "spendwatch.yaml"
    config_path.write_text(
        f"""store: {{path: store.duckdb, snapshots: {{keep: 2}}}}
sources:
  - {{name: estate, type: focus, path: exports, every: 3h, settle_lag: 1h}}
monitors:
  - {{name: total, dimensions: [provider], granularity: [daily]}}
notify:
  from: "spendwatch <spendwatch@example.com>"
  channels: [{{name: mail, type: smtp, host: 127.0.0.1, port: {smtp.port}, security: none}}]
  digest: {{recipients: [finops@example.com], charts: false}}
daemon: {{timezone: UTC, digest_at: "06:00", health: {{stale_after: 12h}}}}
"""
    )
    clock = FixedClock(START)
    config = load_config(config_path)
    store = Store(config.store.path, clock=clock)
    ctx = DaemonContext(config, store, clock)
    ctx.initial_pass.set()  # the start-up hold is wall-clock based; this soak has none
    rss: list[float] = []
    for step in range(int(timedelta(days=DAYS) / STEP)):
        now = clock.now()
        # The exports are restated every step (as open months are), so every collection loads something.
        write_csv(exports / "2026-10.csv", month_rows("2026-10", 31, 5.0 + step))
        write_csv(exports / "2026-11.csv", month_rows("2026-11", now.day - 1, 5.0 + step))
        collect_job(ctx, "estate")
        if step % 4 == 0:  # detection after the day's first collection (the daemon: after each, coalesced)
            detect_job(ctx)
        digest_job(ctx)
        snapshot_job(ctx)
        ready, detail = readiness(config, store, clock)
        [(last_good,)] = store.query(
            "SELECT max(finished_at) FROM runs WHERE job = 'collect:estate' AND status IN ('ok', 'partial')"
        )
        expected = last_good is not None and now - last_good <= STALE_AFTER
        assert ready == expected, f"{now}: /readyz says {ready} ({detail}), last good collection {last_good}"
        rss.append(_rss_mb())
        clock.advance(seconds=STEP.total_seconds())

    faults = Counter(flaky)
    assert faults["503"] and faults["half-way"], f"the seeded faults never fired: {faults}"
    sent = Counter(
        str(message_from_bytes(r.data, policy=policy.default)["X-Spendwatch-Digest-Date"]) for r in smtp.received()
    )
    sent.pop("None", None)  # immediate alerts, not digests
    days = sorted(sent)
    assert all(count == 1 for count in sent.values()), f"a digest went out twice: {sent}"
    first, last = datetime.fromisoformat(days[0]), datetime.fromisoformat(days[-1])
    assert len(days) == (last - first).days + 1 >= DAYS - 1, f"digest days missing: {days}"
    assert {s for (s,) in store.query("SELECT DISTINCT status FROM digests")} == {"sent"}
    assert len(list_snapshots(config.store.path.with_name("store.duckdb.snapshots"))) == 2  # keep: 2, one a day
    growth = rss[-1] - rss[len(rss) // DAYS]
    print(f"soak: faults {dict(faults)}, digests {len(days)}, RSS {rss[0]:.0f} → {rss[-1]:.0f} MB")
    assert growth < 60, f"RSS grew {growth:.0f} MB from the first simulated day to the last"
