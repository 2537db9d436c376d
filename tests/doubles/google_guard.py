"""Running BigQuery jobs whose bytes grow with time, on the fake Google server: jobs.list / get / cancel.

The real ``google-cloud-bigquery`` client (the guard's lister) and the kill switch's
``bigquery-job-cancel`` action talk to it over HTTP. Each ``RunningQuery`` processes bytes at a fixed
rate from its start, by the injected ``now`` (a test's ``FixedClock`` or the wall clock in the
benchmark), so a query crosses a cap at a moment the test knows. ``jobs.cancel`` ends it (state
``DONE`` with a ``stopped`` error, as BigQuery reports a cancelled job) and is recorded with the
moment it arrived (``cancels``).

Usage::

    fake = FakeRunningBigQuery(google_api, now=clock.now)
    fake.add(RunningQuery("analytics-warehouse", "bquxjob_runaway", start=t0, bytes_per_second=TIB / 60))
    ...  # point a GcpJobsConfig (gcp.endpoints.bigquery) and the kill switch (killswitch.gcp) at google_api
    [cancel] = fake.cancels
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tests.doubles.google import ApiError, ApiRequest, GoogleApiServer

BQ = "/bigquery/v2/projects/{project}"


def _ms(moment: datetime) -> str:
    return str(int(moment.timestamp() * 1000))


@dataclass
class RunningQuery:
    project: str
    job_id: str
    start: datetime
    bytes_per_second: float
    estimated_bytes: int | None = None
    user_email: str = "dana.kim@example.com"
    location: str = "US"
    labels: dict[str, str] = field(default_factory=dict)
    query: str = "SELECT * FROM analytics.events e JOIN analytics.sessions s ON TRUE"
    total_bytes: int | None = None  # finishes by itself after processing this much
    report_processed: bool = True  # False: only the timeline says how far it got
    maximum_bytes_billed: int | None = None
    reservation: str | None = None
    slot_ms_per_second: float = 0.0
    list_progress: bool = True  # False: jobs.list shows only the dry-run estimate; jobs.get shows progress
    cancelled_at: datetime | None = None

    def processed(self, now: datetime) -> int:
        until = self.cancelled_at or now
        done = max(0.0, (until - self.start).total_seconds()) * self.bytes_per_second
        return int(min(done, self.total_bytes) if self.total_bytes is not None else done)

    def state(self, now: datetime) -> str:
        if self.cancelled_at is not None:
            return "DONE"
        if now < self.start:
            return "PENDING"
        if self.total_bytes is not None and self.processed(now) >= self.total_bytes:
            return "DONE"
        return "RUNNING"

    def resource(self, now: datetime, *, listed: bool = False) -> dict[str, Any]:
        state = self.state(now)
        processed = self.processed(now)
        query_stats: dict[str, Any] = {"statementType": "SELECT"}
        if self.estimated_bytes is not None:
            query_stats["estimatedBytesProcessed"] = str(self.estimated_bytes)
        hide = listed and not self.list_progress
        if hide:
            pass
        elif self.report_processed and processed:
            query_stats["totalBytesProcessed"] = str(processed)
        elif self.estimated_bytes:
            completed = min(processed, self.estimated_bytes)
            query_stats["timeline"] = [
                {
                    "elapsedMs": str(int((now - self.start).total_seconds() * 1000)),
                    "completedUnits": str(completed // (1 << 30)),
                    "pendingUnits": str((self.estimated_bytes - completed) // (1 << 30)),
                }
            ]
        if self.slot_ms_per_second and not hide:
            seconds = max(0.0, ((self.cancelled_at or now) - self.start).total_seconds())
            query_stats["totalSlotMs"] = str(int(seconds * self.slot_ms_per_second))
        statistics: dict[str, Any] = {
            "creationTime": _ms(self.start),
            "startTime": _ms(self.start),
            "query": query_stats,
        }
        if self.reservation:
            statistics["reservation_id"] = self.reservation
        status: dict[str, Any] = {"state": state}
        if self.cancelled_at is not None:
            error = {"reason": "stopped", "message": "Job execution was cancelled: User requested cancellation"}
            status.update(errorResult=error, errors=[error])
            statistics["endTime"] = _ms(self.cancelled_at)
        configuration: dict[str, Any] = {
            "jobType": "QUERY",
            "query": {"query": self.query, "useLegacySql": False},
            "labels": dict(self.labels),
        }
        if self.maximum_bytes_billed is not None:
            configuration["query"]["maximumBytesBilled"] = str(self.maximum_bytes_billed)
        return {
            "kind": "bigquery#job",
            "id": f"{self.project}:{self.location}.{self.job_id}",
            "jobReference": {"projectId": self.project, "jobId": self.job_id, "location": self.location},
            "configuration": configuration,
            "status": status,
            "statistics": statistics,
            "user_email": self.user_email,
        }


@dataclass(frozen=True)
class CancelCall:
    project: str
    job_id: str
    at: datetime
    wall: float  # time.time() when the request arrived (the benchmark measures with it)


class FakeRunningBigQuery:
    def __init__(self, server: GoogleApiServer, *, now: Callable[[], datetime]) -> None:
        self.server = server
        self.now = now
        self.jobs: dict[tuple[str, str], RunningQuery] = {}
        self.cancels: list[CancelCall] = []
        self.lists = 0
        self.gets = 0
        self._lock = threading.Lock()
        server.add_route("GET", BQ + "/jobs", self._list)
        server.add_route("GET", BQ + "/jobs/{job_id}", self._get)
        server.add_route("POST", BQ + "/jobs/{job_id}/cancel", self._cancel)

    def add(self, job: RunningQuery) -> RunningQuery:
        with self._lock:
            self.jobs[(job.project, job.job_id)] = job
        return job

    def _job(self, request: ApiRequest) -> RunningQuery:
        key = (request.params["project"], request.params["job_id"])
        if key not in self.jobs:
            raise ApiError(404, f"Not found: Job {key[0]}:{key[1]}", reason="notFound")
        return self.jobs[key]

    def _list(self, request: ApiRequest) -> dict[str, Any]:
        now = self.now()
        with self._lock:
            self.lists += 1
            jobs = [j for (p, _), j in sorted(self.jobs.items()) if p == request.params["project"]]
        wanted = {s.upper() for s in request.query_all.get("stateFilter", [])}
        resources = [j.resource(now, listed=True) for j in jobs]
        if wanted:
            resources = [r for r in resources if r["status"]["state"] in wanted]
        offset = int(request.query.get("pageToken") or 0)
        size = int(request.query.get("maxResults") or 50)
        page = resources[offset : offset + size]
        for item in page:
            item["state"] = item["status"]["state"]
        out: dict[str, Any] = {"kind": "bigquery#jobList", "etag": "fake", "jobs": page}
        if offset + size < len(resources):
            out["nextPageToken"] = str(offset + size)
        return out

    def _get(self, request: ApiRequest) -> dict[str, Any]:
        with self._lock:
            self.gets += 1
        return self._job(request).resource(self.now())

    def _cancel(self, request: ApiRequest) -> dict[str, Any]:
        job = self._job(request)
        now = self.now()
        with self._lock:
            if job.state(now) != "DONE":
                job.cancelled_at = now
            self.cancels.append(CancelCall(job.project, job.job_id, now, time.time()))
        return {"kind": "bigquery#jobCancelResponse", "job": job.resource(now)}
