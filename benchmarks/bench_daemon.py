"""SIGTERM to exit: how long ``spendwatch run`` takes to stop, idle and in the middle of a long collection.

Starts the daemon as a subprocess on a simulated estate (``--days`` of history: the longer, the longer
one collection takes), then for each round either

* **idle** — waits until the first collection and detection are done, sends SIGTERM, times the exit; or
* **collecting** — sends SIGTERM as soon as the daemon says it started (its first collection starts
  at once and takes seconds for a long history), times the exit and reads from the log whether the
  collection stopped at a safe point (``job-interrupted``), had to be abandoned when
  ``shutdown_grace`` ran out, or had already finished.

The idle rounds are the baseline measured in the same run; the figure of interest is the ratio
(collecting / idle) and how far both sit under ``shutdown_grace`` and systemd's ``TimeoutStopSec``.

    python benchmarks/bench_daemon.py [--rounds 5] [--days 400]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SPENDWATCH = [sys.executable, "-c", "from spendwatch.cli import main; main()"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config(folder: Path, days: int) -> Path:
    config = {
        "store": {"path": "store.duckdb", "lock_timeout": "120s"},
        "sources": [{"name": "estate", "type": "simulated", "days": days, "every": "1h", "settle_lag": "1h"}],
        "daemon": {"timezone": "UTC", "digest_at": "23:59", "health": {"bind": "127.0.0.1", "port": _free_port()}},
    }
    path = folder / "spendwatch.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _events(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def _wait(condition: object, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise SystemExit("timed out waiting for the daemon")


def one_round(days: int, mode: str) -> tuple[float, str]:
    with tempfile.TemporaryDirectory(prefix="bench-daemon-") as tmp:
        folder = Path(tmp)
        config = _config(folder, days)
        log = folder / "daemon.log"
        proc = subprocess.Popen(
            [*SPENDWATCH, "run", "--config", str(config), "--log-json"],
            stdout=subprocess.DEVNULL,
            stderr=log.open("ab"),
            cwd=REPO,
        )
        try:
            if mode == "idle":
                _wait(lambda: any(e.get("event") == "job-done" and e.get("job") == "detect" for e in _events(log)))
            else:
                _wait(lambda: any(e.get("event") == "started" for e in _events(log)))
            began = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
            seconds = time.monotonic() - began
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        events = _events(log)
        stopped = [e for e in events if e.get("event") == "stopped"]
        if code != 0 or not stopped:
            raise SystemExit(f"{mode}: exit {code}, stopped events {stopped}")
        if stopped[-1].get("abandoned"):
            outcome = "abandoned " + ",".join(map(str, stopped[-1]["abandoned"]))  # type: ignore[arg-type]
        elif interrupted := [e["job"] for e in events if e.get("event") == "job-interrupted"]:
            outcome = "interrupted at a safe point: " + ",".join(map(str, interrupted))
        else:
            outcome = "nothing was running"
        return seconds, outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--days", type=int, default=400, help="days of simulated history (longer: longer collection)")
    args = parser.parse_args()
    print(f"spendwatch run, simulated estate of {args.days} days, {args.rounds} rounds each, load {os.getloadavg()}")
    figures: dict[str, list[float]] = {"idle": [], "collecting": []}
    for number in range(args.rounds):
        for mode in ("idle", "collecting"):  # alternate, so a burst of load from elsewhere hits both
            seconds, outcome = one_round(args.days, mode)
            figures[mode].append(seconds)
            print(f"  round {number + 1} {mode:<10} SIGTERM to exit {seconds:5.2f}s  ({outcome})")
    idle = statistics.median(figures["idle"])
    busy = statistics.median(figures["collecting"])
    print(f"median SIGTERM to exit: idle {idle:.2f}s, during a collection {busy:.2f}s ({busy / idle:.2f}x idle)")
    print(f"max: idle {max(figures['idle']):.2f}s, during a collection {max(figures['collecting']):.2f}s")


if __name__ == "__main__":
    main()
