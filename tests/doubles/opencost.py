"""An OpenCost API double on 127.0.0.1: ``GET /allocation`` in OpenCost's JSON shape.

``OpenCostServer(workloads)`` answers ``window=<start>,<end>&step=1h|1d&aggregate=...`` with one
allocation set per step, each holding every workload running in that step (named
``cluster/namespace/kind/controller`` as OpenCost names aggregated allocations) plus ``__idle__``.
Costs are a pure function of the workload and the step, so a test can compute the fixture's own
total (``expected_total``) independently of the source under test. ``fail_next(status)`` makes the
next request fail; ``requests`` records every query.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Workload:
    cluster: str
    namespace: str
    kind: str
    name: str
    cpu_per_hour: float
    gpu_per_hour: float = 0.0
    ram_per_hour: float = 0.0
    labels: dict[str, str] = field(default_factory=dict)


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


class OpenCostServer:
    def __init__(self, workloads: list[Workload], idle_per_hour: float = 1.25) -> None:
        self.workloads = workloads
        self.idle_per_hour = idle_per_hour
        self.requests: list[dict[str, str]] = []
        self.failures: list[int] = []
        self.override: Any = None
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> OpenCostServer:
        double = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                double.requests.append({"path": parts.path, **query})
                if double.failures:
                    status = double.failures.pop(0)
                    self._send(status, {"code": status, "message": "Internal Server Error"})
                    return
                if parts.path != "/allocation":
                    self._send(404, {"code": 404, "message": "not found"})
                    return
                body = double.override if double.override is not None else double.answer(query)
                self._send(200, body)

            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def fail_next(self, status: int) -> None:
        self.failures.append(status)

    # -- the answer -------------------------------------------------------------------------------

    def steps(self, start: datetime, end: datetime, step: str) -> list[tuple[datetime, datetime]]:
        unit = timedelta(hours=1) if step == "1h" else timedelta(days=1)
        out, t = [], start
        while t < end:
            out.append((t, min(t + unit, end)))
            t += unit
        return out

    def allocation(self, w: Workload, start: datetime, end: datetime) -> dict[str, Any]:
        hours = (end - start).total_seconds() / 3600
        cpu, gpu, ram = w.cpu_per_hour * hours, w.gpu_per_hour * hours, w.ram_per_hour * hours
        return {
            "name": f"{w.cluster}/{w.namespace}/{w.kind}/{w.name}",
            "properties": {
                "cluster": w.cluster,
                "namespace": w.namespace,
                "controllerKind": w.kind,
                "controller": w.name,
                "labels": dict(w.labels),
            },
            "window": {"start": start.strftime("%Y-%m-%dT%H:%M:%SZ"), "end": end.strftime("%Y-%m-%dT%H:%M:%SZ")},
            "start": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "end": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "minutes": hours * 60,
            "cpuCost": cpu,
            "cpuCostAdjustment": 0.0,
            "gpuCost": gpu,
            "ramCost": ram,
            "pvCost": 0.0,
            "networkCost": 0.0,
            "loadBalancerCost": 0.0,
            "sharedCost": 0.0,
            "externalCost": 0.0,
            # OpenCost's total includes its adjustments: 1% more than the components here.
            "totalCost": round((cpu + gpu + ram) * 1.01, 6),
        }

    def answer(self, query: dict[str, str]) -> dict[str, Any]:
        first, last = (_parse(v) for v in query["window"].split(","))
        sets = []
        for start, end in self.steps(first, last, query.get("step", "1d")):
            hours = (end - start).total_seconds() / 3600
            found = {
                f"{w.cluster}/{w.namespace}/{w.kind}/{w.name}": self.allocation(w, start, end) for w in self.workloads
            }
            found["__idle__"] = {
                "name": "__idle__", "properties": {"cluster": self.workloads[0].cluster},
                "window": {"start": start.strftime("%Y-%m-%dT%H:%M:%SZ"), "end": end.strftime("%Y-%m-%dT%H:%M:%SZ")},
                "cpuCost": self.idle_per_hour * hours, "ramCost": 0.0, "totalCost": self.idle_per_hour * hours,
            }  # fmt: skip
            sets.append(found)
        return {"code": 200, "status": "success", "data": sets}

    def expected_total(self, start: datetime, end: datetime, step: str = "1h") -> float:
        total = 0.0
        for a, b in self.steps(start, end, step):
            total += sum(self.allocation(w, a, b)["totalCost"] for w in self.workloads)
            total += self.idle_per_hour * (b - a).total_seconds() / 3600
        return total
