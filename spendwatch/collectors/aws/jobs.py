"""``aws-jobs``: who ran what on AWS — Athena queries, SageMaker, EMR, Glue and Batch jobs, with cost.

Every run records the jobs of the last ``lookback`` (finished ones) and every job running now, with
the cost so far, the cost at its time limit where the platform has one (``projected_cost``,
``max_runtime_seconds``) and how the owner was found (``owner_source``: ``tag:<key>``,
``workgroup``, or ``cloudtrail:<EventName>``).

For the runaway-job guard, ``list_running(session, config)`` returns only what is running now, as an
Arrow table in ``JOB_SCHEMA`` — no store, no CloudTrail, the fewest API calls each platform allows.

A platform that fails (permissions, throttling past the retries) is a ``Problem`` for that platform
and region; the others are still recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field

from spendwatch.collectors.aws.api import AwsApi, Backoff
from spendwatch.collectors.aws.cloudtrail import EVENTS, OwnerLookup, TokenBucket
from spendwatch.collectors.aws.jobs_platforms import (
    Scan,
    athena_queries,
    batch_jobs,
    emr_clusters,
    glue_runs,
    sagemaker_jobs,
)
from spendwatch.collectors.aws.prices import PriceTable
from spendwatch.collectors.base import (
    SOURCES,
    Batch,
    CollectWindow,
    JobBatch,
    Problem,
    Source,
    SourceConfig,
    SourceContext,
)
from spendwatch.config_types import Duration
from spendwatch.connections import AwsConnection
from spendwatch.errors import PermissionDeniedError, SourceError
from spendwatch.store import Store
from spendwatch.store.schema import JOB_SCHEMA, TAGS_TYPE, conform

RUNNING_STATES = frozenset({"QUEUED", "PENDING", "STARTING", "RUNNING"})
Platform = Literal["athena", "sagemaker", "emr", "glue", "batch"]
PLATFORMS: dict[str, Callable[[Scan], Iterator[dict[str, Any]]]] = {
    "athena": athena_queries,
    "sagemaker": sagemaker_jobs,
    "emr": emr_clusters,
    "glue": glue_runs,
    "batch": batch_jobs,
}


class AwsJobsConfig(SourceConfig):
    type: Literal["aws-jobs"] = "aws-jobs"
    aws: AwsConnection = Field(default_factory=AwsConnection)
    every: Duration = Field(default=timedelta(minutes=15), description="jobs change fast: collect often")
    regions: list[str] = Field(default_factory=list, description="regions to scan (default: aws.region)")
    lookback: Duration = Field(default=timedelta(days=2), description="finished jobs younger than this are recorded")
    athena: bool = True
    sagemaker: bool = True
    emr: bool = True
    glue: bool = True
    batch: bool = True
    athena_workgroups: list[str] = Field(default_factory=list, description="default: every enabled workgroup")
    athena_workgroup_owners: dict[str, str] = Field(
        default_factory=dict, description="workgroup → owner, for queries no tag or CloudTrail names"
    )
    athena_max_pages: int = Field(default=20, ge=1, le=1000, description="50 queries a page, newest first")
    prices: dict[str, float] = Field(
        default_factory=dict,
        description="$/hour by instance type (and glue:dpu-hour, athena:tb, emr:uplift, batch:vcpu-hour …)",
    )
    pricing_api: bool = Field(default=False, description="ask the AWS Pricing API for types not in prices")
    pricing_cache: Duration = Field(default=timedelta(days=7), description="how long Pricing API answers are kept")
    cloudtrail: bool = Field(default=False, description="find owners of untagged jobs in CloudTrail")
    cloudtrail_rate: float = Field(default=2.0, gt=0, le=2.0, description="LookupEvents requests per second")
    cloudtrail_max_lookups: int = Field(default=50, ge=1, description="per region and run")

    def platforms(self) -> list[str]:
        return [name for name in PLATFORMS if getattr(self, name)]


def _regions(config: AwsJobsConfig, session: Any) -> list[str]:
    return list(config.regions) or [config.aws.region or getattr(session, "region_name", None) or "us-east-1"]


def _account(api: AwsApi) -> str | None:
    try:
        return str(api.call(api.client("sts"), "GetCallerIdentity")["Account"])
    except SourceError:
        return None


def to_table(records: list[dict[str, Any]]) -> pa.Table:
    """Job records (dicts) → an Arrow table in ``JOB_SCHEMA``."""
    columns = {}
    for field in JOB_SCHEMA:
        values = [r.get(field.name) for r in records]
        columns[field.name] = pa.array(values, type=TAGS_TYPE if field.name == "labels" else field.type)
    return conform(pa.table(columns), JOB_SCHEMA)


def list_running(
    session: Any,
    config: AwsJobsConfig,
    *,
    now: datetime | None = None,
    context: SourceContext | None = None,
    platforms: list[str] | None = None,
) -> pa.Table:
    """Every job running now on the enabled platforms, with cost so far and at its limit (``JOB_SCHEMA``).

    Cheap by design: running-only list calls (``StatusEquals=InProgress``, active EMR states, Batch
    ``RUNNING``/``STARTING``, the newest Athena pages), no CloudTrail, no store writes. Raises
    ``PermissionDeniedError`` / ``SourceError`` (one line) when a platform cannot be read.
    """
    from spendwatch.clock import SystemClock

    moment = now or SystemClock().now()
    if context is None:
        context = SourceContext(clock=SystemClock(), store=None, clients={"boto3_session": session})  # type: ignore[arg-type]
    api = AwsApi(config.name, config.aws, context)
    prices = PriceTable(config.prices)
    account = _account(api)
    records: list[dict[str, Any]] = []
    for region in _regions(config, api.session):
        for platform in platforms or config.platforms():
            scan = Scan(api, config, prices, region, moment, moment, True, account)
            records.extend(r for r in PLATFORMS[platform](scan) if r["state"] in RUNNING_STATES)
    for record in records:
        record.pop("_kind", None)
    return to_table(records)


@SOURCES.register("aws-jobs")
class AwsJobsSource(Source):
    config_model: ClassVar[type[SourceConfig]] = AwsJobsConfig
    config: AwsJobsConfig

    def collect(self, window: CollectWindow) -> Iterator[Batch]:
        api = AwsApi(self.name, self.config.aws, self.context)
        store: Store = self.context.store
        now = window.until
        prices = PriceTable(
            self.config.prices,
            api=api if self.config.pricing_api else None,
            store=store,
            source=self.name,
            now=now,
            cache_for=self.config.pricing_cache,
        )
        account = _account(api)
        since = max(window.since, now - self.config.lookback)
        for region in _regions(self.config, api.session):
            for platform in self.config.platforms():
                scan = Scan(api, self.config, prices, region, now, since, False, account)
                try:
                    records = list(PLATFORMS[platform](scan))
                    self._find_owners(api, region, records)
                except PermissionDeniedError as exc:
                    yield Problem(f"{self.name} {platform} {region}", str(exc))
                    continue
                except SourceError as exc:
                    yield Problem(f"{self.name} {platform} {region}", str(exc))
                    continue
                self.context.count(f"aws_jobs:{platform}", len(records))
                running = sum(1 for r in records if r["state"] in RUNNING_STATES)
                self.context.count("aws_jobs_running", running)
                for record in records:
                    record.pop("_kind", None)
                if records:
                    yield JobBatch(to_table(records), label=f"{self.name} {platform} {region}")

    def _find_owners(self, api: AwsApi, region: str, records: list[dict[str, Any]]) -> None:
        if not self.config.cloudtrail:
            return
        unknown = [r for r in records if not r.get("owner")]
        if not unknown:
            return
        known = self._owners_in_store(unknown)
        backoff = self.context.clients.get("aws_backoff")
        bucket = TokenBucket(self.config.cloudtrail_rate)
        if isinstance(backoff, Backoff):
            bucket.sleep = backoff.sleep  # tests record the pauses instead of sleeping
        lookup = OwnerLookup(api, bucket, max_lookups=self.config.cloudtrail_max_lookups)
        for record in unknown:
            key = (record["platform"], record["job_id"])
            if key in known:
                continue  # the store keeps the owner found before (upsert coalesces)
            principal = lookup.find(record["_kind"], record["job_id"], record.get("start_time"), region)
            if principal:
                record.update(owner=principal, user=principal, owner_source=f"cloudtrail:{EVENTS[record['_kind']][0]}")
        self.context.count("aws_cloudtrail_lookups", lookup.lookups)

    def _owners_in_store(self, records: list[dict[str, Any]]) -> set[tuple[str, str]]:
        ids = [r["job_id"] for r in records]
        rows = self.context.store.query(
            f"SELECT platform, job_id FROM jobs WHERE owner IS NOT NULL AND job_id IN ({', '.join('?' * len(ids))})",
            ids,
        )
        return {(str(p), str(j)) for p, j in rows}
