"""Token buckets per API, so the watch loop stays inside the providers' rate limits however many jobs run.

Every call the guard makes takes a token from the bucket of its API (``service:Operation``) in its
scope (an AWS region, a GCP project); a caller that finds the bucket empty sleeps until a token is
due. ``DEFAULT_LIMITS`` holds the rate and burst we allow ourselves and the documented quota each is
kept under (``ceiling`` is the highest rate ``guard.rate_limits`` may set). Where a provider publishes
a figure (BigQuery, Dataproc) the budget is a small fraction of it; where it publishes none (AWS
control-plane reads are "throttled per account and Region"), the budget is 1–2 requests/s — in steady
state the guard uses a tenth of that (see ``benchmarks/README.md``), and a tighter account lowers it.
The limiter also counts calls per API: ``guard status`` and the benchmark report them.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

_BQ = "BigQuery: 100 API requests/s per user per method (cloud.google.com/bigquery/quotas)"
_EMR = "EMR: a token bucket per API, e.g. AddInstanceFleet burst 5, refill 0.5/s (EMR guide, Service Quotas)"
_AWS = "AWS control-plane reads are throttled per account and Region (no fixed figure published)"
_VERTEX = "Vertex AI: per-region resource-management request quota (see the project's Quotas page)"
_DATAPROC = "Dataproc: DefaultRequestsPerMinutePerProjectPerRegion 7,500 (cloud.google.com/dataproc/quotas)"
_K8S = (
    "Kubernetes: API Priority and Fairness shares the API server's concurrency among clients; a cluster-wide "
    "list is the expensive kind (kubernetes.io/docs/concepts/cluster-administration/flow-control)"
)


@dataclass(frozen=True)
class ApiLimit:
    rate: float  # requests per second we allow ourselves
    burst: int  # calls we may make at once after a quiet spell
    ceiling: float  # the most a config may raise ``rate`` to
    documented: str  # the provider's quota this stays under


DEFAULT_LIMITS: dict[str, ApiLimit] = {
    # Google Cloud
    "bigquery:jobs.list": ApiLimit(10.0, 20, 100.0, _BQ),
    "bigquery:jobs.get": ApiLimit(10.0, 20, 100.0, _BQ),
    "aiplatform:customJobs.list": ApiLimit(2.0, 5, 10.0, _VERTEX),
    "dataproc:clusters.list": ApiLimit(2.0, 5, 100.0, _DATAPROC),
    "dataproc:batches.list": ApiLimit(2.0, 5, 100.0, _DATAPROC),
    # Kubernetes (per cluster): nodes, live pods and one list per tracked owner kind, paged
    "kubernetes:list": ApiLimit(5.0, 20, 50.0, _K8S),
    # AWS
    "sts:GetCallerIdentity": ApiLimit(1.0, 2, 10.0, _AWS),
    "athena:ListWorkGroups": ApiLimit(1.0, 2, 5.0, _AWS),
    "athena:GetWorkGroup": ApiLimit(1.0, 5, 5.0, _AWS),
    "athena:ListTagsForResource": ApiLimit(1.0, 5, 5.0, _AWS),
    "athena:ListQueryExecutions": ApiLimit(2.0, 5, 5.0, _AWS),
    "athena:BatchGetQueryExecution": ApiLimit(2.0, 5, 20.0, _AWS),
    "sagemaker:ListTrainingJobs": ApiLimit(1.0, 3, 5.0, _AWS),
    "sagemaker:ListProcessingJobs": ApiLimit(1.0, 3, 5.0, _AWS),
    "sagemaker:ListTransformJobs": ApiLimit(1.0, 3, 5.0, _AWS),
    "sagemaker:DescribeTrainingJob": ApiLimit(2.0, 5, 10.0, _AWS),
    "sagemaker:DescribeProcessingJob": ApiLimit(2.0, 5, 10.0, _AWS),
    "sagemaker:DescribeTransformJob": ApiLimit(2.0, 5, 10.0, _AWS),
    "sagemaker:ListTags": ApiLimit(2.0, 5, 10.0, _AWS),
    "emr:ListClusters": ApiLimit(1.0, 5, 5.0, _EMR),
    "emr:DescribeCluster": ApiLimit(1.0, 5, 5.0, _EMR),
    "emr:ListInstanceGroups": ApiLimit(1.0, 5, 5.0, _EMR),
    "emr:ListInstanceFleets": ApiLimit(1.0, 5, 5.0, _EMR),
    "glue:GetJobs": ApiLimit(1.0, 3, 5.0, _AWS),
    "glue:GetJobRuns": ApiLimit(2.0, 5, 10.0, _AWS),
    "glue:GetTags": ApiLimit(1.0, 3, 5.0, _AWS),
    "batch:DescribeJobQueues": ApiLimit(1.0, 3, 5.0, _AWS),
    "batch:ListJobs": ApiLimit(2.0, 5, 10.0, _AWS),
    "batch:DescribeJobs": ApiLimit(2.0, 5, 10.0, _AWS),
}


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; ``take`` sleeps until one is available."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.clock = clock
        self.sleep = sleep
        self.tokens = float(self.burst)
        self.updated = clock()
        self.waited = 0.0
        self._lock = threading.Lock()

    def take(self) -> float:
        """Take one token; returns how long it waited."""
        with self._lock:
            now = self.clock()
            self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            wait = 0.0
            if self.tokens < 1.0:
                wait = (1.0 - self.tokens) / self.rate
                self.sleep(wait)
                self.updated = self.clock()
                self.tokens = 1.0
            self.tokens -= 1.0
            self.waited += wait
            return wait


@dataclass
class RateLimiter:
    """One bucket per (API, scope); counts every call. Shared by every poll of one guard process."""

    overrides: Mapping[str, float] = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    calls: Counter[str] = field(default_factory=Counter)
    _buckets: dict[tuple[str, str], TokenBucket] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, api: str, scope: str = "") -> None:
        with self._lock:
            bucket = self._buckets.get((api, scope))
            if bucket is None:
                limit = DEFAULT_LIMITS.get(api, ApiLimit(1.0, 2, 1.0, _AWS))
                rate = self.overrides.get(api, limit.rate)
                bucket = TokenBucket(rate, limit.burst, clock=self.clock, sleep=self.sleep)
                self._buckets[(api, scope)] = bucket
            self.calls[api] += 1
        bucket.take()

    def waited(self) -> float:
        return sum(b.waited for b in self._buckets.values())

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.calls)


def budget_per_hour(api: str, overrides: Mapping[str, float] | None = None) -> float:
    """The most calls per hour (per scope) the limiter lets through for ``api``."""
    limit = DEFAULT_LIMITS[api]
    return (overrides or {}).get(api, limit.rate) * 3600.0
