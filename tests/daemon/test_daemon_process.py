"""``spendwatch run`` as a real subprocess: fast schedules, /metrics, SIGTERM, restart, one digest, one daemon.

Robust on a loaded 2-core machine: every wait polls for a condition with a generous deadline, and
SIGTERM is judged by what a user needs (exit 0 before systemd's ``TimeoutStopSec`` kills it, a store
that opens, a restart that converges, one digest), not by how far the jobs got: under load a
collection may be interrupted at a safe point or abandoned when the grace runs out, by design.
How fast SIGTERM is on a quiet machine is measured in ``benchmarks/bench_daemon.py``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.doubles.smtp import SmtpServer, free_port
from tests.doubles.waits import PATIENCE

pytestmark = pytest.mark.slow  # runs first (tests/conftest.py): it is among the suite's longest files

STARTUP_DEADLINE = PATIENCE
# deploy/systemd/spendwatch.service: TimeoutStopSec=20s (SIGKILL after that). The daemon's own bound is
# shutdown_grace (<= 9 s) plus interpreter teardown; 20 s holds that promise under a 3x slowdown.
STOP_DEADLINE = 20.0
SPENDWATCH = [sys.executable, "-c", "from spendwatch.cli import main; main()"]


def wait_for(
    condition: Callable[[], Any], timeout: float, what: str, proc: subprocess.Popen[bytes] | None = None
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the daemon exited ({proc.returncode}) while waiting for {what}")
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=PATIENCE) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def write_daemon_config(folder: Path, smtp: SmtpServer, port: int) -> Path:
    config = {
        "store": {"path": "store.duckdb", "lock_timeout": "120s"},
        "sources": [{"name": "demo-estate", "type": "simulated", "days": 45, "every": "3s", "settle_lag": "1h"}],
        "notify": {
            "from": "spendwatch <spendwatch@example.com>",
            "channels": [{"name": "mail", "type": "smtp", "host": "127.0.0.1", "port": smtp.port, "security": "none"}],
            "digest": {"recipients": ["finops@example.com"]},
        },
        # 00:00 UTC has always passed today: the day's digest is due the moment the daemon starts.
        "daemon": {
            "timezone": "UTC",
            "digest_at": "00:00",
            "digest_check_every": "2s",
            "alerts_every": "5s",
            "killswitch_every": "5s",
            "health": {"bind": "127.0.0.1", "port": port},
        },
    }
    path = folder / "spendwatch.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start(config: Path, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*SPENDWATCH, "run", "--config", str(config), "--log-json"],
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
        env={**os.environ, **(env or {})},
    )


def stop(proc: subprocess.Popen[bytes]) -> tuple[int, float]:
    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=PATIENCE)
    return code, time.monotonic() - began


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpServer]:
    server = SmtpServer(tmp_path)
    yield server
    server.stop()


def metric(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(name)]


def test_daemon_runs_serves_metrics_stops_on_sigterm_and_sends_one_digest_across_restarts(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    port = free_port()
    config = write_daemon_config(tmp_path, smtp, port)
    log = tmp_path / "daemon.log"
    notify_socket = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify_socket))
    listener.settimeout(0.2)
    proc = start(config, log, {"NOTIFY_SOCKET": str(notify_socket), "WATCHDOG_USEC": "1000000"})
    try:
        wait_for(lambda: http_get(port, "/healthz")[0] == 200, STARTUP_DEADLINE, "/healthz", proc)
        wait_for(smtp.received, STARTUP_DEADLINE, "the digest", proc)
        wait_for(lambda: http_get(port, "/readyz")[0] == 200, STARTUP_DEADLINE, "/readyz", proc)
        # The server has the message a moment before the daemon records it as sent.
        sent_metric = "spendwatch_digest_last_sent_timestamp_seconds "
        wait_for(lambda: metric(http_get(port, "/metrics")[1], sent_metric), STARTUP_DEADLINE, "sent recorded", proc)
        status, body = http_get(port, "/metrics")
        assert status == 200
        assert metric(body, "spendwatch_up ") == ["spendwatch_up 1.0"]
        assert metric(body, 'spendwatch_job_last_success_timestamp_seconds{job="collect:demo-estate"}')
        assert metric(body, 'spendwatch_job_last_success_timestamp_seconds{job="detect"}')
        assert metric(body, "spendwatch_digest_last_sent_timestamp_seconds ")
        assert metric(body, 'spendwatch_incidents_open{severity="high"}')
        rows = metric(body, 'spendwatch_source_rows_collected{source="demo-estate"}')
        assert rows and float(rows[0].split()[-1]) > 1000
        ready = json.loads(http_get(port, "/readyz")[1])
        assert ready == {"ready": True, "store": "ok", "sources": {"demo-estate": "ok"}}

        # A second daemon on the same store refuses to start, naming the holder.
        second = subprocess.run(
            [*SPENDWATCH, "run", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode == 2
        assert f"another spendwatch daemon (pid {proc.pid}) is already running" in second.stderr
        assert second.stderr.count("\n") == 1 and "Traceback" not in second.stderr

        # sd_notify: READY=1, then watchdog pings.
        seen = wait_for(lambda: _datagrams(listener, "WATCHDOG=1"), PATIENCE, "a WATCHDOG=1 ping", proc)
        assert any("READY=1" in d for d in seen)

        # Let a few more collections/detections run while the digest check keeps finding it sent.
        wait_for(
            lambda: _count_events(log, "job-done", "collect:demo-estate") >= 3, PATIENCE, "three collections", proc
        )
        code, seconds = stop(proc)
        assert code == 0
        print(f"SIGTERM to exit: {seconds:.2f}s")
        assert seconds < STOP_DEADLINE, f"SIGTERM took {seconds:.1f}s"
        assert any("STOPPING=1" in d for d in _drain(listener))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    # Restart: the day's digest is already sent, so nothing more arrives.
    proc = start(config, log)
    try:
        wait_for(lambda: _count_events(log, "started", None) >= 2, STARTUP_DEADLINE, "the restart", proc)
        wait_for(
            lambda: _count_events(log, "job-done", "detect", after_start=2) >= 1,
            STARTUP_DEADLINE,
            "a detection after restart",
            proc,
        )
        # Several digest checks (every 2 s) pass after the restart's first collection and detection.
        time_after = time.monotonic() + 6
        wait_for(lambda: time.monotonic() > time_after, 10, "digest checks")
        code, seconds = stop(proc)
        assert code == 0 and seconds < STOP_DEADLINE, (code, seconds)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    received = smtp.received()
    assert len(received) == 1, [r.message["Subject"] for r in received]
    message = message_from_bytes(received[0].data, policy=policy.default)
    assert message["X-Spendwatch-Digest-Date"] == time.strftime("%Y-%m-%d", time.gmtime())
    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert not [e for e in events if e.get("level") == "error"], "a job failed"
    stops = [e for e in events if e.get("event") == "stopped"]
    assert len(stops) == 2, stops
    # Whatever the first stop cut short (interrupted or abandoned), the restart repaired it: a whole
    # collection and a detection ran after it, and every stored period is exactly one complete load.
    restart = max(i for i, e in enumerate(events) if e.get("event") == "started")
    after = events[restart:]
    assert any(
        e.get("event") == "job-done" and e.get("job") == "collect:demo-estate" and not e.get("interrupted")
        for e in after
    ), "no complete collection after the restart"
    assert any(e.get("event") == "job-done" and e.get("job") == "detect" and not e.get("interrupted") for e in after)
    _assert_store_consistent(tmp_path / "store.duckdb")


def _assert_store_consistent(path: Path) -> None:
    """Every period's lines are the one batch its load row names, with that row's count and total."""
    from spendwatch.store import Store

    store = Store(path)
    loads = store.query("SELECT source, period_start, batch_id, row_count, billed_total FROM loads ORDER BY 2")
    assert loads, "nothing was stored"
    for source, start, batch_id, row_count, billed_total in loads:
        rows = store.query(
            "SELECT batch_id, count(*), sum(billed_cost) FROM cost_lines WHERE source = ? AND charge_period_start >= ? "
            "AND charge_period_start < (SELECT period_end FROM loads WHERE source = ? AND period_start = ?) GROUP BY 1",
            [source, start, source, start],
        )
        assert len(rows) == 1 and rows[0][0] == batch_id and rows[0][1] == row_count, (start, rows, batch_id)
        assert rows[0][2] == pytest.approx(billed_total, rel=1e-9)
    stray = store.query("SELECT count(*) FROM cost_lines WHERE batch_id NOT IN (SELECT batch_id FROM loads)")
    assert stray == [(0,)]


def _count_events(log: Path, event: str, job: str | None, *, after_start: int = 1) -> int:
    """Events of ``job`` logged since the ``after_start``-th daemon start (1: the whole log)."""
    count = 0
    starts = 0
    for line in log.read_text().splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        starts += entry.get("event") == "started"
        if starts >= after_start and entry.get("event") == event and (job is None or entry.get("job") == job):
            count += 1
    return count


_SEEN: list[str] = []


def _drain(listener: socket.socket) -> list[str]:
    while True:
        try:
            _SEEN.append(listener.recv(4096).decode())
        except (TimeoutError, BlockingIOError):
            return list(_SEEN)


def _datagrams(listener: socket.socket, wanted: str) -> list[str] | None:
    seen = _drain(listener)
    return seen if any(wanted in d for d in seen) else None
