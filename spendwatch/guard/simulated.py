"""An in-process BigQuery for the demo: running queries whose bytes grow with a clock, cancellable.

It answers the three calls the guard and the kill switch make (``list_jobs``, ``get_job``,
``cancel_job``) with job resources in the REST API's shape, parsed by the real
``google-cloud-bigquery`` library (``Client.job_from_resource``), so the guard's lister, its
estimator and the ``bigquery-job-cancel`` action run unchanged. No network, no credentials.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from spendwatch.clock import Clock


def _ms(moment: datetime) -> str:
    return str(int(moment.timestamp() * 1000))


@dataclass
class SimulatedQuery:
    """A query that processes ``total_bytes`` evenly between ``start`` and ``end``."""

    project: str
    job_id: str
    user_email: str
    query: str
    start: datetime
    end: datetime
    total_bytes: int
    location: str = "US"
    labels: dict[str, str] = field(default_factory=dict)
    cancelled_at: datetime | None = None

    def processed(self, now: datetime) -> int:
        until = min(self.cancelled_at or now, now, self.end)
        if until <= self.start:
            return 0
        return int(self.total_bytes * ((until - self.start) / (self.end - self.start)))

    def state(self, now: datetime) -> str:
        if self.cancelled_at is not None and now >= self.cancelled_at:
            return "DONE"
        if now < self.start:
            return "PENDING"
        return "DONE" if now >= self.end else "RUNNING"

    def resource(self, now: datetime) -> dict[str, Any]:
        state = self.state(now)
        query: dict[str, Any] = {"statementType": "SELECT", "estimatedBytesProcessed": str(self.total_bytes)}
        processed = self.processed(now)
        if processed:
            query["totalBytesProcessed"] = str(processed)
        statistics: dict[str, Any] = {"creationTime": _ms(self.start), "startTime": _ms(self.start), "query": query}
        status: dict[str, Any] = {"state": state}
        if state == "DONE":
            statistics["endTime"] = _ms(self.cancelled_at or self.end)
            query["totalBytesBilled"] = str(processed)
        if self.cancelled_at is not None and state == "DONE":
            error = {"reason": "stopped", "message": "Job execution was cancelled: User requested cancellation"}
            status.update(errorResult=error, errors=[error])
        return {
            "kind": "bigquery#job",
            "id": f"{self.project}:{self.location}.{self.job_id}",
            "jobReference": {"projectId": self.project, "jobId": self.job_id, "location": self.location},
            "configuration": {
                "jobType": "QUERY",
                "query": {"query": self.query, "useLegacySql": False},
                "labels": dict(self.labels),
            },
            "status": status,
            "statistics": statistics,
            "user_email": self.user_email,
        }


@dataclass(frozen=True)
class SimulatedCancel:
    project: str
    job_id: str
    at: datetime


class SimulatedBigQuery:
    """Stands in for ``google.cloud.bigquery.Client`` in the demo (see module doc)."""

    def __init__(self, clock: Clock, project: str) -> None:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery

        self.clock = clock
        self.project = project
        self.queries: dict[tuple[str, str], SimulatedQuery] = {}
        self.cancels: list[SimulatedCancel] = []
        self.calls = 0
        self._lock = threading.Lock()
        # Only parses resources (``job_from_resource``); it never sends a request.
        self._parser = bigquery.Client(project=project, credentials=AnonymousCredentials())

    def add(self, query: SimulatedQuery) -> SimulatedQuery:
        self.queries[(query.project, query.job_id)] = query
        return query

    def _job(self, resource: dict[str, Any]) -> Any:
        return self._parser.job_from_resource(resource)

    def list_jobs(self, project: str | None = None, state_filter: str | None = None, **_: Any) -> list[Any]:
        now = self.clock.now()
        with self._lock:
            self.calls += 1
            found = [q for (p, _), q in sorted(self.queries.items()) if p == (project or self.project)]
        wanted = (state_filter or "").upper()
        return [self._job(q.resource(now)) for q in found if not wanted or q.state(now) == wanted]

    def _find(self, job_id: str, project: str | None) -> SimulatedQuery:
        from google.api_core import exceptions

        query = self.queries.get((project or self.project, job_id))
        if query is None:
            raise exceptions.NotFound(f"Not found: Job {project or self.project}:{job_id}")
        return query

    def get_job(self, job_id: str, project: str | None = None, **_: Any) -> Any:
        with self._lock:
            self.calls += 1
        return self._job(self._find(job_id, project).resource(self.clock.now()))

    def cancel_job(self, job_id: str, project: str | None = None, **_: Any) -> Any:
        now = self.clock.now()
        query = self._find(job_id, project)
        with self._lock:
            self.calls += 1
            if query.state(now) != "DONE":
                query.cancelled_at = now
            self.cancels.append(SimulatedCancel(query.project, job_id, now))
        return self._job(query.resource(now))
