"""The daemon's HTTP endpoint (loopback by default): ``/healthz``, ``/readyz``, ``/metrics``.

* ``/healthz`` — the process is up and its scheduler runs (for a liveness probe: restart me if not);
* ``/readyz`` — the store answers and every enabled source had a successful collection recently
  (``daemon.health.stale_after``, default 3 × the source's interval + 10 minutes); the JSON body
  says which check failed;
* ``/metrics`` — Prometheus text format from ``metrics.StoreCollector`` (read from the store).

A ``ThreadingHTTPServer`` on its own daemon thread: a slow scrape never blocks a job, and the
handlers only read the store (shared lock, short timeout).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from spendwatch.clock import Clock
from spendwatch.store import Store

if TYPE_CHECKING:
    from spendwatch.config import Config

log = logging.getLogger("spendwatch.health")
PROBE_LOCK_TIMEOUT = 5.0


def readiness(config: Config, store: Store, clock: Clock) -> tuple[bool, dict[str, Any]]:
    """(ready, detail): the store answers and each enabled source collected successfully lately."""
    now = clock.now()
    detail: dict[str, Any] = {"store": "ok", "sources": {}}
    try:
        rows = store.query(
            "SELECT job, max(finished_at) FROM runs WHERE job LIKE 'collect:%' AND status IN ('ok', 'partial') "
            "GROUP BY job"
        )
    except Exception as exc:
        detail["store"] = f"unreachable: {exc}"
        return False, detail
    last_ok = {job.removeprefix("collect:"): at for job, at in rows}
    ready = True
    configured = config.daemon.health.stale_after
    for source in config.sources:
        if not source.enabled:
            continue
        limit = configured if configured > timedelta(0) else source.every * 3 + timedelta(minutes=10)
        at = last_ok.get(source.name)
        if at is None:
            state = "never collected"
        elif now - at > limit:
            age, allowed = int((now - at).total_seconds()), int(limit.total_seconds())
            state = f"stale: last good collection {age}s ago (limit {allowed}s)"
        else:
            state = "ok"
        ready = ready and state == "ok"
        detail["sources"][source.name] = state
    return ready, detail


class HealthServer:
    def __init__(
        self, config: Config, store: Store, clock: Clock, *, bind: str = "127.0.0.1", port: int = 9464
    ) -> None:
        from spendwatch.daemon.metrics import store_registry

        self.config = config
        self.clock = clock
        # Probes must answer quickly even while a job holds the store: their own short lock timeout.
        self.store = Store(store.path, lock_timeout=PROBE_LOCK_TIMEOUT, clock=clock, memory_limit=store.memory_limit)
        self.registry = store_registry(config, self.store)
        self.scheduler_alive: Callable[[], bool] = lambda: True
        self._server = ThreadingHTTPServer((bind, port), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, name="health-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "spendwatch"

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                try:
                    if path == "/healthz":
                        alive = server.scheduler_alive()
                        self._send(200 if alive else 503, "text/plain", b"ok\n" if alive else b"scheduler stopped\n")
                    elif path == "/readyz":
                        ready, detail = readiness(server.config, server.store, server.clock)
                        body = json.dumps({"ready": ready, **detail}, indent=2).encode() + b"\n"
                        self._send(200 if ready else 503, "application/json", body)
                    elif path == "/metrics":
                        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

                        self._send(200, CONTENT_TYPE_LATEST, generate_latest(server.registry))
                    else:
                        self._send(404, "text/plain", b"not found: try /healthz, /readyz or /metrics\n")
                except (BrokenPipeError, ConnectionResetError):
                    # The prober gave up waiting (a probe timeout shorter than a busy store's answer).
                    log.debug("health endpoint %s: the client went away before the answer", path)
                except Exception:
                    log.exception("health endpoint %s failed", path)
                    self._send(500, "text/plain", b"internal error\n")

            def _send(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("%s " + format, self.address_string(), *args)

        return Handler
