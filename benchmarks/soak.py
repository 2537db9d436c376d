"""Soak: the daemon on the simulated estate for 30 simulated days, with random source faults.

    python benchmarks/soak.py                          # 30 simulated days at 7200x (~6 minutes)
    python benchmarks/soak.py --days 2 --speedup 14400 # a quick look
    python benchmarks/soak.py --estate small --days 3  # FOCUS files instead (what the suite's test runs)
    python benchmarks/soak.py --json soak.json         # the figures as JSON as well

The daemon (``spendwatch.daemon.run_daemon``, the real scheduler, store, health server and SMTP
channel) runs in a child process whose clock is injected and runs ``--speedup`` times faster than the
wall clock: a collection every 3 wall seconds is one every 6 simulated hours, a simulated day passes
in 12 wall seconds. The simulated source fails at random (seeded, ``--fault-rate``): before yielding
anything, half-way (after its first month was stored), or slowly. This process

* receives the mail on a local SMTP server and checks that **every digest day arrives exactly once**,
  with no gap;
* polls ``/readyz`` every two seconds and checks it is **honest**: ready exactly when the last good
  collection recorded in the store is younger than ``daemon.health.stale_after`` (1 simulated day) —
  samples within one poll of the boundary are not judged;
* samples the child's **RSS** (``VmRSS``) every two seconds and reports it per simulated day, with the
  growth from the first day to the last;
* stops the daemon with SIGTERM and checks it exits 0 (**no crash**; the child's log has no traceback).

Figures are printed as a table; docs/reliability.md quotes them with the command that produced them.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SIM_START = datetime(2026, 11, 1, 0, 0, tzinfo=UTC)
POLL = 2.0  # wall seconds between samples


class FastClock:
    """Simulated time: ``start`` plus the wall time since ``wall_start``, ``speedup`` times faster."""

    def __init__(self, start: datetime, wall_start: float, speedup: float) -> None:
        self.start, self.wall_start, self.speedup = start, wall_start, speedup

    def now(self) -> datetime:
        return self.start + timedelta(seconds=(time.time() - self.wall_start) * self.speedup)


# -- the child: the daemon with a fast clock and a flaky source -------------------------------------------


def run_child(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(REPO))
    from spendwatch.collectors import SOURCES
    from spendwatch.config import load_config
    from spendwatch.daemon import run_daemon
    from spendwatch.errors import SourceError
    from spendwatch.logs import configure_logging

    configure_logging("INFO", json_lines=True)
    rng = random.Random(args.seed)
    config = load_config(args.child)
    source_class = SOURCES.get(config.sources[0].type)
    real = source_class.collect

    def flaky(self: Any, window: Any) -> Iterator[Any]:
        roll = rng.random()
        if roll < args.fault_rate / 3:
            raise SourceError(f"source {self.name}: injected fault: the API answered 503")
        batches = real(self, window)
        first = next(batches, None)
        if first is None:  # nothing new to load this time
            return
        yield first
        if roll < 2 * args.fault_rate / 3:
            raise SourceError(f"source {self.name}: injected fault: the connection dropped half-way")
        if roll < args.fault_rate:
            time.sleep(1.0)  # a slow answer
        yield from batches

    source_class.collect = flaky  # type: ignore[method-assign]
    clock = FastClock(SIM_START, args.wall_start, args.speedup)
    return run_daemon(config, clock=clock)


# -- the parent: SMTP, /readyz, RSS ------------------------------------------------------------------


def write_config(folder: Path, smtp_port: int, health_port: int, estate: str) -> Path:
    if estate == "simulated":
        source = "{name: estate, type: simulated, days: 14, every: 3s, settle_lag: 1h}"
    else:  # a small FOCUS estate: quick collections, for the test in the suite
        from tests.doubles.focus_files import month_rows, write_csv

        for month, days in (("2026-10", 31), ("2026-11", 30), ("2026-12", 31)):
            write_csv(folder / "exports" / f"{month}.csv", month_rows(month, days, 5.0))
        source = "{name: estate, type: focus, path: exports, every: 3s, settle_lag: 1h}"
    config = f"""store:
  path: soak.duckdb
  lock_timeout: 120s
  snapshots: {{keep: 3, check_every: 2s}}
sources:
  - {source}
killswitch:
  rules:
    - name: cancel-runaway-queries
      when: {{incident: {{min_severity: high}}}}
      do: cancel
      how: dry-run
notify:
  from: "spendwatch soak <spendwatch@example.com>"
  channels:
    - {{name: mail, type: smtp, host: 127.0.0.1, port: {smtp_port}, security: none}}
  digest: {{recipients: [finops@example.com]}}
daemon:
  timezone: UTC
  digest_at: "06:00"
  digest_check_every: 1s
  alerts_every: 5s
  detect_every: 60s
  killswitch_every: 30s
  startup_wait: 10s
  health: {{bind: 127.0.0.1, port: {health_port}, stale_after: 1d}}
"""
    path = folder / "spendwatch.yaml"
    path.write_text(config)
    return path


def readyz(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
    except (OSError, ValueError):
        return 0, {}


def wait_until_up(child: subprocess.Popen[bytes], port: int, deadline: float = 300.0) -> None:
    began = time.monotonic()
    while time.monotonic() - began < deadline:
        if child.poll() is not None:
            raise SystemExit(f"the daemon exited ({child.returncode}) before it was up")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
                if answer.status == 200:
                    return
        except (OSError, urllib.error.HTTPError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"the daemon did not answer /healthz within {deadline:.0f}s")


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def last_good_collection(store_path: Path) -> datetime | None:
    from spendwatch.store import Store

    rows = Store(store_path, lock_timeout=30).query(
        "SELECT max(finished_at) FROM runs WHERE job = 'collect:estate' AND status IN ('ok', 'partial')"
    )
    return rows[0][0] if rows and rows[0][0] is not None else None


def soak(days: float, speedup: float, fault_rate: float, seed: int, estate: str = "simulated") -> dict[str, Any]:
    sys.path.insert(0, str(REPO))
    from tests.doubles.smtp import SmtpServer, free_port

    folder = Path(tempfile.mkdtemp(prefix="spendwatch-soak-"))
    smtp = SmtpServer(folder)
    health = free_port()
    config = write_config(folder, smtp.port, health, estate)
    wall_start = time.time()
    clock = FastClock(SIM_START, wall_start, speedup)
    log = folder / "daemon.log"
    child = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--child",
            str(config),
            "--wall-start",
            repr(wall_start),
            "--speedup",
            str(speedup),
            "--fault-rate",
            str(fault_rate),
            "--seed",
            str(seed),
        ],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        cwd=REPO,
    )
    samples: list[dict[str, Any]] = []
    judged = mismatches = busy = 0
    boundary = timedelta(seconds=3 * POLL * speedup)
    stale_after = timedelta(days=1)
    try:
        wait_until_up(child, health)
        end = clock.now() + timedelta(days=days)  # the soak is measured from the daemon being up
        while clock.now() < end:
            if child.poll() is not None:
                raise SystemExit(f"the daemon exited ({child.returncode}) at {clock.now():%Y-%m-%d %H:%M}")
            time.sleep(POLL)
            before = last_good_collection(folder / "soak.duckdb")
            status, body = readyz(health)
            now = clock.now()
            good = last_good_collection(folder / "soak.duckdb")
            sample = {"sim": now.isoformat(), "rss_mb": rss_mb(child.pid), "ready": status == 200, "status": status}
            if str(body.get("store", "ok")) != "ok":
                busy += 1  # "store unreachable": the probe's lock timeout passed while a job wrote; not judged
            elif status in (200, 503) and good is not None and good == before:  # no collection ended meanwhile
                age = now - good
                if abs(age - stale_after) > boundary:  # near the boundary the two clocks may disagree by a poll
                    judged += 1
                    honest = (status == 200) == (age <= stale_after)
                    mismatches += not honest
                    sample["honest"] = honest
            samples.append(sample)
        stop_began = time.monotonic()
        child.send_signal(signal.SIGTERM)
        exit_code = child.wait(timeout=60)
        stop_seconds = time.monotonic() - stop_began
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        smtp.stop()
    result = summarise(folder, smtp, samples, judged, mismatches, exit_code, stop_seconds, days, speedup, log)
    result["readyz_store_busy"] = busy
    return result


def summarise(
    folder: Path,
    smtp: Any,
    samples: list[dict[str, Any]],
    judged: int,
    mismatches: int,
    exit_code: int,
    stop_seconds: float,
    days: float,
    speedup: float,
    log: Path,
) -> dict[str, Any]:
    from spendwatch.store import Store

    digests = Counter()
    for received in smtp.received():
        message = message_from_bytes(received.data, policy=policy.default)
        day = message.get("X-Spendwatch-Digest-Date")
        if day:
            digests[str(day)] += 1
    sent_days = sorted(digests)
    gaps = []
    if sent_days:
        day, last = datetime.fromisoformat(sent_days[0]), datetime.fromisoformat(sent_days[-1])
        while day <= last:
            if day.date().isoformat() not in digests:
                gaps.append(day.date().isoformat())
            day += timedelta(days=1)
    store = Store(folder / "soak.duckdb")
    runs = {
        f"{job} {status}": count
        for job, status, count in store.query("SELECT job, status, count(*) FROM runs GROUP BY ALL ORDER BY ALL")
    }
    ledger = dict(store.query("SELECT status, count(*) FROM digests GROUP BY ALL"))
    per_day: dict[str, list[float]] = {}
    for sample in samples:
        if sample["rss_mb"] is not None:
            per_day.setdefault(sample["sim"][:10], []).append(sample["rss_mb"])
    rss_by_day = {day: round(statistics.median(values), 1) for day, values in sorted(per_day.items())}
    medians = list(rss_by_day.values())
    text = log.read_text(errors="replace")
    return {
        "simulated_days": days,
        "speedup": speedup,
        "wall_seconds": round(len(samples) * POLL, 1),
        "exit_code": exit_code,
        "sigterm_to_exit_s": round(stop_seconds, 2),
        "tracebacks_in_log": text.count("Traceback"),
        "digests_per_day": dict(sorted(digests.items())),
        "digest_days_twice": [d for d, n in digests.items() if n > 1],
        "digest_gaps": gaps,
        "digest_ledger": ledger,
        "runs": runs,
        "readyz_samples": len(samples),
        "readyz_judged": judged,
        "readyz_dishonest": mismatches,
        "readyz_not_ready": sum(1 for s in samples if not s["ready"]),
        "rss_mb_by_day": rss_by_day,
        "rss_mb_first_day": medians[1] if len(medians) > 1 else (medians[0] if medians else None),
        "rss_mb_last_day": medians[-1] if medians else None,
        "rss_mb_max": round(max((s["rss_mb"] for s in samples if s["rss_mb"]), default=0), 1),
        "snapshots": len(list((folder / "soak.duckdb.snapshots").glob("snapshot-*.duckdb"))),
        "folder": str(folder),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=float, default=30.0, help="simulated days (default 30)")
    parser.add_argument("--speedup", type=float, default=7200.0, help="simulated seconds per wall second")
    parser.add_argument("--fault-rate", type=float, default=0.25, help="share of collections that fail or stall")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--estate", choices=["simulated", "small"], default="simulated", help="small: FOCUS files")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--wall-start", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return run_child(args)
    began = time.monotonic()
    result = soak(args.days, args.speedup, args.fault_rate, args.seed, args.estate)
    result["wall_seconds"] = round(time.monotonic() - began, 1)
    print(f"soak: {args.days:g} simulated days at {args.speedup:g}x in {result['wall_seconds']} s wall")
    for key, value in result.items():
        if key != "rss_mb_by_day":
            print(f"  {key}: {value}")
    curve = ", ".join(f"{d[5:]} {v}" for d, v in result["rss_mb_by_day"].items())
    print(f"  RSS (MB, median per simulated day): {curve}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    problems = []
    if result["exit_code"] != 0:
        problems.append(f"exit code {result['exit_code']}")
    if result["digest_days_twice"] or result["digest_gaps"]:
        problems.append(f"digests twice {result['digest_days_twice']}, missing {result['digest_gaps']}")
    if result["readyz_dishonest"]:
        problems.append(f"{result['readyz_dishonest']} dishonest /readyz answers")
    if result["tracebacks_in_log"]:
        problems.append(f"{result['tracebacks_in_log']} tracebacks in the daemon log")
    for problem in problems:
        print(f"soak: FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
