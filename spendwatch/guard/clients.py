"""The guard's view of the cloud clients: every call rate-limited, static descriptions reused.

The listers in ``spendwatch.collectors`` call their APIs through clients they are handed (the
``aws:<service>`` / ``bigquery_client`` / ``vertex_session`` / ``dataproc_session`` seams). The guard
hands them these wrappers, so without changing a line of the listers:

* every request first takes a token from its API's bucket (``ratelimit.RateLimiter``);
* what cannot change while a job runs — a started SageMaker job's instance type, count and limit, a
  Batch job's resources (described again when its status changes), the caller's account — is
  described once per job (kept up to a day);
* what changes rarely — an EMR cluster's instance groups, a Glue job's definition, tags, Athena
  workgroups — is reused for ``describe_ttl``, each entry for a slightly different share of it (so a
  fleet's descriptions do not all expire in the same poll). The kill switch re-reads the cloud
  before it acts, so a stale tag can never cause an action;
* BigQuery job resources seen on ``jobs.list`` pages are kept, so the guard reads their statistics
  (bytes processed, timeline, slot-ms) without a second call.
"""

from __future__ import annotations

import functools
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from spendwatch.guard.ratelimit import RateLimiter

# (service, operation) → how to cache its answer: the request key and whether an answer may be kept.
_START_KEYS = {
    "DescribeTrainingJob": "TrainingStartTime",
    "DescribeProcessingJob": "ProcessingStartTime",
    "DescribeTransformJob": "TransformStartTime",
}
_STATIC: dict[tuple[str, str], tuple[str, ...]] = {
    ("sts", "GetCallerIdentity"): (),
    ("sagemaker", "DescribeTrainingJob"): ("TrainingJobName",),
    ("sagemaker", "DescribeProcessingJob"): ("ProcessingJobName",),
    ("sagemaker", "DescribeTransformJob"): ("TransformJobName",),
    ("sagemaker", "ListTags"): ("ResourceArn",),
    ("emr", "DescribeCluster"): ("ClusterId",),
    ("emr", "ListInstanceGroups"): ("ClusterId", "Marker"),
    ("emr", "ListInstanceFleets"): ("ClusterId", "Marker"),
    ("glue", "GetJobs"): ("NextToken",),
    ("glue", "GetTags"): ("ResourceArn",),
    ("batch", "DescribeJobQueues"): (),
    ("athena", "ListWorkGroups"): ("NextToken",),
    ("athena", "GetWorkGroup"): ("WorkGroup",),
    ("athena", "ListTagsForResource"): ("ResourceARN",),
}
_EMR_SETTLED = {"RUNNING", "WAITING"}
# Answers that cannot change for the life of the job (or the process): kept this long.
_IMMUTABLE = {
    "GetCallerIdentity",
    "DescribeTrainingJob",
    "DescribeProcessingJob",
    "DescribeTransformJob",
    "DescribeJobs",
}
LIFETIME = timedelta(days=1)


def spread(ttl: timedelta, key: tuple[Any, ...]) -> timedelta:
    """``ttl`` scaled into [0.5, 1.0) by the key, so entries cached in one poll expire over several."""
    share = 0.5 + (zlib.crc32(repr(key).encode()) % 1000) / 2000
    return ttl * share


@dataclass
class DescribeCache:
    """Answers kept between polls, by (scope, service, operation, request key)."""

    ttl: timedelta
    entries: dict[tuple[Any, ...], tuple[datetime, Any]] = field(default_factory=dict)
    hits: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, key: tuple[Any, ...], now: datetime, ttl: timedelta | None = None) -> Any | None:
        with self._lock:
            found = self.entries.get(key)
            if found is None:
                return None
            at, value = found
            limit = spread(self.ttl, key) if ttl is None else ttl
            if now - at > limit:
                del self.entries[key]
                return None
            self.hits += 1
            return value

    def put(self, key: tuple[Any, ...], value: Any, now: datetime) -> None:
        with self._lock:
            self.entries[key] = (now, value)
            if len(self.entries) > 50_000:  # a long-lived daemon must not grow without bound
                oldest = sorted(self.entries.items(), key=lambda item: item[1][0])[:10_000]
                for stale, _ in oldest:
                    del self.entries[stale]


def _cacheable(service: str, operation: str, answer: dict[str, Any]) -> bool:
    if operation in _START_KEYS:
        return answer.get(_START_KEYS[operation]) is not None  # until it starts, elapsed time is zero
    if (service, operation) == ("emr", "DescribeCluster"):
        return str(answer.get("Cluster", {}).get("Status", {}).get("State")) in _EMR_SETTLED
    return True


class AwsClientProxy:
    """A boto3 client whose calls take a token first; describe-style answers are reused (see module doc)."""

    def __init__(
        self,
        client: Any,
        limiter: RateLimiter,
        cache: DescribeCache,
        *,
        scope: str,
        now: Callable[[], datetime],
        batch_status: dict[str, str] | None = None,
    ) -> None:
        self._client = client
        self._limiter = limiter
        self._cache = cache
        self._scope = scope
        self._now = now
        self._service = str(client.meta.service_model.service_name)
        self._batch_status = batch_status if batch_status is not None else {}
        self.meta = client.meta

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        operation = self._client.meta.method_to_api_mapping.get(name)
        if operation is None or not callable(attribute):
            return attribute
        return functools.partial(self._call, name, operation)

    def _call(self, method: str, operation: str, **params: Any) -> Any:
        if (self._service, operation) == ("batch", "DescribeJobs"):
            return self._describe_batch_jobs(method, params)
        names = _STATIC.get((self._service, operation))
        key = None
        if names is not None:
            key = (self._scope, self._service, operation, tuple(str(params.get(n)) for n in names))
            ttl = LIFETIME if operation in _IMMUTABLE else None
            cached = self._cache.get(key, self._now(), ttl)
            if cached is not None:
                return cached
        answer = self._send(method, operation, params)
        if key is not None and _cacheable(self._service, operation, answer):
            self._cache.put(key, answer, self._now())
        if (self._service, operation) == ("batch", "ListJobs"):
            for summary in answer.get("jobSummaryList", []):
                self._batch_status[str(summary["jobId"])] = str(summary.get("status"))
        return answer

    def _send(self, method: str, operation: str, params: dict[str, Any]) -> Any:
        self._limiter.take(f"{self._service}:{operation}", self._scope)
        return getattr(self._client, method)(**params)

    def _describe_batch_jobs(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Describe only the Batch jobs whose status changed since they were last described."""
        now = self._now()
        wanted = [str(j) for j in params.get("jobs", [])]
        found: dict[str, Any] = {}
        missing = []
        for job_id in wanted:
            cached = self._cache.get((self._scope, "batch", "DescribeJobs", job_id), now, LIFETIME)
            if cached is not None and str(cached.get("status")) == self._batch_status.get(job_id):
                found[job_id] = cached
            else:
                missing.append(job_id)
        if missing:
            answer = self._send(method, "DescribeJobs", {**params, "jobs": missing})
            for job in answer.get("jobs", []):
                found[str(job["jobId"])] = job
                if job.get("startedAt") is not None:
                    self._cache.put((self._scope, "batch", "DescribeJobs", str(job["jobId"])), job, now)
        return {"jobs": [found[j] for j in wanted if j in found]}


# -- Google ----------------------------------------------------------------------------------------


class BigQueryProxy:
    """A ``google.cloud.bigquery.Client`` whose list/get calls are rate-limited and whose job resources are kept."""

    def __init__(self, client: Any, limiter: RateLimiter) -> None:
        self._client = client
        self._limiter = limiter
        self.resources: dict[tuple[str, str], dict[str, Any]] = {}
        self.project = getattr(client, "project", None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def list_jobs(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        project = str(kwargs.get("project") or self.project or "")
        listing = self._client.list_jobs(*args, **kwargs)
        return self._pages(listing, project)

    def _pages(self, listing: Any, project: str) -> Iterator[Any]:
        pages = getattr(listing, "pages", None)
        if pages is None:  # a plain list (an in-process fake): one call
            self._limiter.take("bigquery:jobs.list", project)
            for job in listing:
                self._keep(job)
                yield job
            return
        first = True
        while first or getattr(listing, "next_page_token", None):
            first = False
            self._limiter.take("bigquery:jobs.list", project)
            try:
                page = next(pages)
            except StopIteration:
                return
            for job in page:
                self._keep(job)
                yield job

    def _keep(self, job: Any) -> None:
        resource = getattr(job, "_properties", None)
        if isinstance(resource, dict):
            self.resources[(str(job.project), str(job.job_id))] = resource

    def get_job(self, job_id: str, **kwargs: Any) -> Any:
        self._limiter.take("bigquery:jobs.get", str(kwargs.get("project") or self.project or ""))
        job = self._client.get_job(job_id, **kwargs)
        self._keep(job)
        return job


class VertexSessionProxy:
    """An ``AuthorizedSession`` whose GETs (customJobs.list pages) are rate-limited per region."""

    def __init__(self, session: Any, limiter: RateLimiter) -> None:
        self._session = session
        self._limiter = limiter

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)

    def get(self, url: str, *args: Any, **kwargs: Any) -> Any:
        parts = urlsplit(url).path.split("/")
        region = parts[parts.index("locations") + 1] if "locations" in parts else ""
        project = parts[parts.index("projects") + 1] if "projects" in parts else ""
        self._limiter.take("aiplatform:customJobs.list", f"{project}/{region}")
        return self._session.get(url, *args, **kwargs)


class DataprocSessionProxy:
    """An ``AuthorizedSession`` for Dataproc whose requests (each list page) are rate-limited per API and region.

    The lister sends ``GET …/projects/{p}/regions/{r}/clusters`` and ``…/locations/{r}/batches``
    through ``GoogleRest``, which calls ``request``; each goes to the bucket of its list API.
    """

    def __init__(self, session: Any, limiter: RateLimiter) -> None:
        self._session = session
        self._limiter = limiter

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        parts = urlsplit(url).path.split("/")
        project = parts[parts.index("projects") + 1] if "projects" in parts else ""
        where = next((parts[i + 1] for i, p in enumerate(parts[:-1]) if p in ("regions", "locations")), "")
        api = "dataproc:batches.list" if parts[-1] == "batches" else "dataproc:clusters.list"
        self._limiter.take(api, f"{project}/{where}")
        return self._session.request(method, url, *args, **kwargs)
