"""Estimates (how each figure is computed) and the token buckets, on their own."""

from __future__ import annotations

from datetime import timedelta

import pytest

from spendwatch.collectors.gcp.prices import BUNDLED, TIB
from spendwatch.guard.clients import DescribeCache
from spendwatch.guard.estimate import Observation, athena_costs, bigquery_stats, burn_rate, refine_bigquery
from spendwatch.guard.ratelimit import DEFAULT_LIMITS, RateLimiter, TokenBucket, budget_per_hour
from tests.guard.conftest import NOW


def test_burn_rate_is_the_change_since_the_last_poll_else_the_average() -> None:
    start = NOW - timedelta(hours=2)
    rate, how = burn_rate(100.0, Observation(NOW - timedelta(minutes=1), 90.0), start, NOW)
    assert rate == pytest.approx(600.0) and how == "change over the last 1m00s"
    rate, how = burn_rate(100.0, None, start, NOW)
    assert rate == pytest.approx(50.0) and how == "average since it started"
    stale = Observation(NOW - timedelta(hours=1), 10.0)  # too long ago to say anything about "now"
    assert burn_rate(100.0, stale, start, NOW)[1] == "average since it started"
    assert burn_rate(None, None, start, NOW) == (None, "no cost yet")


def test_athena_projection_runs_the_scan_rate_to_the_timeout_and_respects_the_cutoff() -> None:
    start = NOW - timedelta(minutes=10)
    free = athena_costs(10**12, per_tb=5.0, start=start, now=NOW, timeout=timedelta(minutes=30), cutoff=None)
    assert free["estimated_cost"] == pytest.approx(5.0) and free["projected_cost"] == pytest.approx(15.0)
    capped = athena_costs(10**12, per_tb=5.0, start=start, now=NOW, timeout=timedelta(minutes=30), cutoff=2 * 10**12)
    assert capped["projected_cost"] == pytest.approx(10.0) and "BytesScannedCutoffPerQuery" in capped["cost_method"]
    tiny = athena_costs(1, per_tb=5.0, start=start, now=NOW, timeout=timedelta(minutes=30), cutoff=None)
    assert tiny["bytes_billed"] == 10_000_000  # Athena's 10 MB minimum


def test_bigquery_statistics_are_read_from_the_job_resource() -> None:
    resource = {
        "status": {"state": "RUNNING"},
        "configuration": {"query": {"maximumBytesBilled": str(50 * TIB)}, "jobTimeoutMs": "3600000"},
        "statistics": {
            "query": {
                "estimatedBytesProcessed": str(100 * TIB),
                "timeline": [
                    {"completedUnits": "10", "pendingUnits": "90"},
                    {"completedUnits": "30", "pendingUnits": "70"},
                ],
            }
        },
    }
    stats = bigquery_stats(resource)
    assert stats.progress == pytest.approx(0.3) and stats.timeout_ms == 3_600_000 and stats.informative
    row = refine_bigquery(
        {"start_time": NOW - timedelta(minutes=5)}, stats, BUNDLED, pricing="auto", edition="enterprise", now=NOW
    )
    assert row["estimated_cost"] == pytest.approx(30 * 6.25)
    assert row["projected_cost"] == pytest.approx(50 * 6.25)  # 100 TiB estimate, but it fails at 50 TiB billed
    assert bigquery_stats({}).informative is False


def test_a_token_bucket_lets_a_burst_through_then_paces_to_its_rate() -> None:
    now = [0.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    bucket = TokenBucket(2.0, 5, clock=lambda: now[0], sleep=sleep)
    for _ in range(9):
        bucket.take()
    assert waits == [pytest.approx(0.5)] * 4 and now[0] == pytest.approx(2.0)  # 5 at once, then 2 per second
    now[0] += 10.0
    bucket.take()
    assert len(waits) == 4  # refilled while idle (to its burst, no more)


def test_the_limiter_counts_calls_and_applies_overrides() -> None:
    limiter = RateLimiter(overrides={"bigquery:jobs.list": 50.0}, clock=lambda: 0.0, sleep=lambda s: None)
    for _ in range(3):
        limiter.take("bigquery:jobs.list", "p1")
    limiter.take("bigquery:jobs.get", "p1")
    assert limiter.snapshot() == {"bigquery:jobs.list": 3, "bigquery:jobs.get": 1}
    assert budget_per_hour("bigquery:jobs.list", {"bigquery:jobs.list": 50.0}) == 180_000
    assert all(limit.rate <= limit.ceiling for limit in DEFAULT_LIMITS.values())


def test_describe_cache_forgets_after_its_ttl() -> None:
    cache = DescribeCache(timedelta(minutes=10))
    cache.put(("s", "emr", "DescribeCluster", ("j-1",)), {"Cluster": {}}, NOW)
    # Each entry lives for its own share of the ttl, between a half and all of it.
    assert cache.get(("s", "emr", "DescribeCluster", ("j-1",)), NOW + timedelta(minutes=4)) == {"Cluster": {}}
    assert cache.get(("s", "emr", "DescribeCluster", ("j-1",)), NOW + timedelta(minutes=11)) is None
    assert cache.hits == 1
