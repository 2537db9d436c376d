"""One reader per AWS job platform: Athena queries, SageMaker jobs, EMR clusters, Glue runs, Batch jobs.

Each returns job records (dicts in ``JOB_SCHEMA`` columns, plus ``_kind`` for the CloudTrail lookup)
for jobs that ran in the scan window, running ones included, with the cost so far and — where the
platform has a time limit — the cost at that limit (``projected_cost``). ``running_only`` scans only
what is running now, as cheaply as the API allows (the runaway guard calls it often).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from spendwatch.collectors.aws.api import AwsApi
from spendwatch.collectors.aws.prices import PriceTable
from spendwatch.collectors.tags import first_tag

MB = 1_000_000
ATHENA_MINIMUM_BYTES = 10 * MB
_GLUE_DPU_PER_WORKER = {
    "Standard": 1.0,
    "G.025X": 0.25,
    "G.1X": 1.0,
    "G.2X": 2.0,
    "G.4X": 4.0,
    "G.8X": 8.0,
    "Z.2X": 2.0,
}
_ARN_ACCOUNT = re.compile(r"^arn:aws[a-z-]*:[a-z0-9-]+:[a-z0-9-]*:(\d{12}):")


@dataclass
class Scan:
    """Everything one platform reader needs for one region."""

    api: AwsApi
    config: Any  # AwsJobsConfig (not imported: it imports this module)
    prices: PriceTable
    region: str
    now: datetime
    since: datetime
    running_only: bool
    account: str | None
    tag_cache: dict[str, dict[str, str]] = field(default_factory=dict)

    def client(self, service: str) -> Any:
        return self.api.client(service, region=self.region)

    def call(self, service: str, operation: str, **params: Any) -> dict[str, Any]:
        return self.api.call(self.client(service), operation, **params)


def _utc(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return None


def _seconds(start: datetime | None, end: datetime | None, now: datetime) -> float:
    if start is None:
        return 0.0
    return max(0.0, ((end or now) - start).total_seconds())


def _account(arn: str | None, fallback: str | None) -> str | None:
    match = _ARN_ACCOUNT.match(arn or "")
    return match.group(1) if match else fallback


def _owner(record: dict[str, Any], tags: dict[str, str], owner_tags: list[str]) -> None:
    owner = first_tag(tags, owner_tags)
    if owner:
        key = next(k for k in owner_tags if tags.get(k))
        record["owner"] = owner.rsplit(":", 1)[-1] if key == "aws:createdBy" else owner
        record["owner_source"] = f"tag:{key}"


def _record(scan: Scan, platform: str, kind: str, job_id: str, **fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "platform": platform,
        "job_id": job_id,
        "provider": "aws",
        "region_id": scan.region,
        "billing_currency": "USD",
        "_kind": kind,
    }
    record.update(fields)
    tags: dict[str, str] = fields.get("labels") or {}
    record["labels"] = list(tags.items()) or None
    _owner(record, tags, scan.config.owner_tags)
    return record


def _priced(
    scan: Scan, instance_type: str | None, count: int, seconds: float, limit: float | None, uplift: float = 0.0
) -> dict[str, Any]:
    """Cost so far and at the time limit for ``count`` × ``instance_type`` over ``seconds``."""
    if not instance_type:
        return {"cost_method": "unpriced"}
    price = scan.prices.instance(instance_type, scan.region)
    if price is None:
        return {"cost_method": f"unpriced: no price for {instance_type}"}
    hourly = price.hourly * (1 + uplift) * max(count, 1)
    out: dict[str, Any] = {
        "estimated_cost": round(hourly * seconds / 3600, 6),
        "cost_method": f"{max(count, 1)} x {instance_type} x seconds at ${price.hourly:g}/h ({price.method})",
    }
    if uplift:
        out["cost_method"] += f" + {uplift:.0%} EMR fee"
    if limit:
        out["projected_cost"] = round(hourly * limit / 3600, 6)
    return out


# -- Athena -----------------------------------------------------------------------------------------

ATHENA_STATES = {"QUEUED": "QUEUED", "RUNNING": "RUNNING", "SUCCEEDED": "SUCCEEDED", "FAILED": "FAILED"}


def athena_queries(scan: Scan) -> Iterator[dict[str, Any]]:
    workgroups = list(scan.config.athena_workgroups) or list(_athena_workgroups(scan))
    for workgroup in workgroups:
        yield from _athena_workgroup(scan, workgroup)


def _athena_workgroups(scan: Scan) -> Iterator[str]:
    token: str | None = None
    while True:
        params: dict[str, Any] = {"MaxResults": 50}
        if token:
            params["NextToken"] = token
        page = scan.call("athena", "ListWorkGroups", **params)
        for group in page.get("WorkGroups", []):
            if group.get("State", "ENABLED") == "ENABLED":
                yield str(group["Name"])
        token = page.get("NextToken")
        if not token:
            return


def _athena_workgroup(scan: Scan, workgroup: str) -> Iterator[dict[str, Any]]:
    token: str | None = None
    for _ in range(scan.config.athena_max_pages):
        params: dict[str, Any] = {"WorkGroup": workgroup, "MaxResults": 50}
        if token:
            params["NextToken"] = token
        page = scan.call("athena", "ListQueryExecutions", **params)
        ids = list(page.get("QueryExecutionIds", []))
        if not ids:
            return
        executions = scan.call("athena", "BatchGetQueryExecution", QueryExecutionIds=ids).get("QueryExecutions", [])
        oldest = scan.now
        for execution in executions:
            record = _athena_record(scan, workgroup, execution)
            submitted = record.get("start_time") or scan.now
            oldest = min(oldest, submitted)
            if scan.running_only and record["state"] not in ("QUEUED", "RUNNING"):
                continue
            if record.get("end_time") is None or record["end_time"] >= scan.since:
                yield record
        token = page.get("NextToken")
        # Executions come newest first: once a page reaches past the window, older pages cannot matter.
        horizon = scan.now - timedelta(hours=6) if scan.running_only else scan.since
        if not token or oldest < horizon:
            return


def _athena_record(scan: Scan, workgroup: str, execution: dict[str, Any]) -> dict[str, Any]:
    status = execution.get("Status", {})
    stats = execution.get("Statistics", {})
    scanned = int(stats.get("DataScannedInBytes") or 0)
    billed = max(ATHENA_MINIMUM_BYTES, -(-scanned // MB) * MB) if scanned or status.get("State") == "SUCCEEDED" else 0
    price = scan.prices.rate("athena:tb")
    query = str(execution.get("Query") or "")
    owner = scan.config.athena_workgroup_owners.get(workgroup)
    record = _record(
        scan,
        "athena",
        "athena",
        str(execution["QueryExecutionId"]),
        sub_account_id=scan.account,
        name=workgroup,
        state=ATHENA_STATES.get(str(status.get("State")), "CANCELLED"),
        start_time=_utc(status.get("SubmissionDateTime")),
        end_time=_utc(status.get("CompletionDateTime")),
        query_text=query[:8000] or None,
        query_hash=hashlib.sha256(" ".join(query.split()).lower().encode()).hexdigest()[:16] if query else None,
        bytes_processed=scanned,
        bytes_billed=billed,
        estimated_cost=round(billed / 1e12 * price, 6),
        cost_method=f"bytes scanned (10 MB minimum) at ${price:g}/TB",
        resource_id=str(execution["QueryExecutionId"]),
    )
    if owner and not record.get("owner"):
        record.update(owner=owner, owner_source="workgroup")
    return record


# -- SageMaker --------------------------------------------------------------------------------------

SAGEMAKER_STATES = {
    "InProgress": "RUNNING",
    "Stopping": "RUNNING",
    "Completed": "SUCCEEDED",
    "Failed": "FAILED",
    "Stopped": "CANCELLED",
}
_SAGEMAKER_KINDS = (
    # kind, list op, list key, name key, describe op, arn key, status key, start, end, resources path
    ("training", "ListTrainingJobs", "TrainingJobSummaries", "TrainingJobName", "DescribeTrainingJob",
     "TrainingJobArn", "TrainingJobStatus", "TrainingStartTime", "TrainingEndTime", ("ResourceConfig",)),
    ("processing", "ListProcessingJobs", "ProcessingJobSummaries", "ProcessingJobName", "DescribeProcessingJob",
     "ProcessingJobArn", "ProcessingJobStatus", "ProcessingStartTime", "ProcessingEndTime",
     ("ProcessingResources", "ClusterConfig")),
    ("transform", "ListTransformJobs", "TransformJobSummaries", "TransformJobName", "DescribeTransformJob",
     "TransformJobArn", "TransformJobStatus", "TransformStartTime", "TransformEndTime", ("TransformResources",)),
)  # fmt: skip


def sagemaker_jobs(scan: Scan) -> Iterator[dict[str, Any]]:
    for kind, list_op, list_key, name_key, describe_op, *rest in _SAGEMAKER_KINDS:
        token: str | None = None
        while True:
            params: dict[str, Any] = {"MaxResults": 100}
            if scan.running_only:
                params["StatusEquals"] = "InProgress"
            else:
                params["LastModifiedTimeAfter"] = scan.since
            if token:
                params["NextToken"] = token
            page = scan.call("sagemaker", list_op, **params)
            for summary in page.get(list_key, []):
                name = str(summary[name_key])
                described = scan.call("sagemaker", describe_op, **{name_key: name})
                yield _sagemaker_record(scan, kind, name, described, rest)
            token = page.get("NextToken")
            if not token:
                break


def _sagemaker_record(scan: Scan, kind: str, name: str, job: dict[str, Any], keys: list[Any]) -> dict[str, Any]:
    arn_key, status_key, start_key, end_key, path = keys
    resources: dict[str, Any] = job
    for part in path:
        resources = resources.get(part, {})
    instance_type = resources.get("InstanceType")
    count = int(resources.get("InstanceCount") or 1)
    start, end = _utc(job.get(start_key)), _utc(job.get(end_key))
    state = SAGEMAKER_STATES.get(str(job.get(status_key)), "FAILED")
    billable = job.get("BillableTimeInSeconds")
    # Billable time (spot savings and all) is final once the job ends; until then, the wall clock.
    if billable is not None and state != "RUNNING":
        seconds = float(billable) / max(count, 1)
    else:
        seconds = _seconds(start, end, scan.now)
    limit = job.get("StoppingCondition", {}).get("MaxRuntimeInSeconds")
    arn = str(job.get(arn_key) or "")
    tags = _sagemaker_tags(scan, arn)
    return _record(
        scan,
        "sagemaker",
        f"sagemaker-{kind}",
        name,
        sub_account_id=_account(arn, scan.account),
        name=f"{kind}:{name}",
        state=state,
        start_time=start,
        end_time=end,
        instance_type=instance_type,
        instance_count=count,
        max_runtime_seconds=int(limit) if limit else None,
        resource_id=arn or None,
        labels=tags,
        **_priced(scan, instance_type, count, seconds, float(limit) if limit else None),
    )


def _sagemaker_tags(scan: Scan, arn: str) -> dict[str, str]:
    if not arn:
        return {}
    answer = scan.call("sagemaker", "ListTags", ResourceArn=arn, MaxResults=100)
    return {str(t["Key"]): str(t["Value"]) for t in answer.get("Tags", [])}


# -- EMR --------------------------------------------------------------------------------------------

EMR_ACTIVE = ["STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING", "TERMINATING"]
EMR_STATES = {
    "STARTING": "STARTING",
    "BOOTSTRAPPING": "STARTING",
    "RUNNING": "RUNNING",
    "WAITING": "RUNNING",
    "TERMINATING": "RUNNING",
    "TERMINATED": "SUCCEEDED",
    "TERMINATED_WITH_ERRORS": "FAILED",
}


def emr_clusters(scan: Scan) -> Iterator[dict[str, Any]]:
    queries: list[dict[str, Any]] = [{"ClusterStates": EMR_ACTIVE}]
    if not scan.running_only:
        ended = ["TERMINATED", "TERMINATED_WITH_ERRORS"]
        queries.append({"CreatedAfter": scan.since - timedelta(days=7), "ClusterStates": ended})
    seen: set[str] = set()
    for query in queries:
        marker: str | None = None
        while True:
            params = dict(query, Marker=marker) if marker else dict(query)
            page = scan.call("emr", "ListClusters", **params)
            for summary in page.get("Clusters", []):
                cluster_id = str(summary["Id"])
                if cluster_id in seen:
                    continue
                seen.add(cluster_id)
                record = _emr_record(scan, cluster_id)
                if record.get("end_time") is None or record["end_time"] >= scan.since:
                    yield record
            marker = page.get("Marker")
            if not marker:
                break


def _emr_record(scan: Scan, cluster_id: str) -> dict[str, Any]:
    cluster = scan.call("emr", "DescribeCluster", ClusterId=cluster_id)["Cluster"]
    timeline = cluster.get("Status", {}).get("Timeline", {})
    start, end = _utc(timeline.get("CreationDateTime")), _utc(timeline.get("EndDateTime"))
    state = EMR_STATES.get(str(cluster.get("Status", {}).get("State")), "FAILED")
    fleet = cluster.get("InstanceCollectionType") == "INSTANCE_FLEET"
    groups = _emr_fleets(scan, cluster_id) if fleet else _emr_groups(scan, cluster_id, state)
    seconds = _seconds(start, end, scan.now)
    uplift = scan.prices.rate("emr:uplift")
    cost, methods, instances = 0.0, [], 0
    unpriced = []
    for instance_type, count in groups:
        priced = _priced(scan, instance_type, count, seconds, None, uplift)
        if "estimated_cost" in priced:
            cost += priced["estimated_cost"]
            methods.append(priced["cost_method"])
        else:
            unpriced.append(instance_type)
        instances += count
    tags = {str(t["Key"]): str(t["Value"]) for t in cluster.get("Tags", [])}
    main_type = max(groups, key=lambda g: g[1])[0] if groups else None
    method = "; ".join(methods) if methods else "unpriced"
    if unpriced:
        method += f"; unpriced: {', '.join(unpriced)}"
    return _record(
        scan,
        "emr",
        "emr",
        cluster_id,
        sub_account_id=_account(cluster.get("ClusterArn"), scan.account),
        name=cluster.get("Name"),
        state=state,
        start_time=start,
        end_time=end,
        instance_type=main_type,
        instance_count=instances,
        estimated_cost=round(cost, 6) if methods else None,
        cost_method=method + " (current size over the whole run)",
        resource_id=cluster.get("ClusterArn") or cluster_id,
        labels=tags,
    )


def _emr_groups(scan: Scan, cluster_id: str, state: str) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    marker: str | None = None
    while True:
        params: dict[str, Any] = {"ClusterId": cluster_id}
        if marker:
            params["Marker"] = marker
        page = scan.call("emr", "ListInstanceGroups", **params)
        for group in page.get("InstanceGroups", []):
            running = int(group.get("RunningInstanceCount") or 0)
            requested = int(group.get("RequestedInstanceCount") or 0)
            count = running if state in ("RUNNING", "STARTING") and running else requested
            out.append((str(group["InstanceType"]), count))
        marker = page.get("Marker")
        if not marker:
            return out


def _emr_fleets(scan: Scan, cluster_id: str) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    page = scan.call("emr", "ListInstanceFleets", ClusterId=cluster_id)
    for fleet in page.get("InstanceFleets", []):
        specs = fleet.get("InstanceTypeSpecifications", [])
        if not specs:
            continue
        units = int(fleet.get("ProvisionedOnDemandCapacity") or 0) + int(fleet.get("ProvisionedSpotCapacity") or 0)
        weight = int(specs[0].get("WeightedCapacity") or 1)
        out.append((str(specs[0]["InstanceType"]), max(1, units // max(weight, 1))))
    return out


# -- Glue -------------------------------------------------------------------------------------------

GLUE_STATES = {
    "STARTING": "STARTING",
    "RUNNING": "RUNNING",
    "STOPPING": "RUNNING",
    "WAITING": "QUEUED",
    "SUCCEEDED": "SUCCEEDED",
    "FAILED": "FAILED",
    "ERROR": "FAILED",
    "TIMEOUT": "FAILED",
    "STOPPED": "CANCELLED",
    "EXPIRED": "CANCELLED",
}


def glue_runs(scan: Scan) -> Iterator[dict[str, Any]]:
    for job in _glue_jobs(scan):
        token: str | None = None
        while True:
            params: dict[str, Any] = {"JobName": job["Name"], "MaxResults": 50}
            if token:
                params["NextToken"] = token
            page = scan.call("glue", "GetJobRuns", **params)
            runs = page.get("JobRuns", [])
            for run in runs:
                record = _glue_record(scan, job, run)
                if scan.running_only and record["state"] not in ("STARTING", "RUNNING", "QUEUED"):
                    continue
                if record.get("end_time") is None or record["end_time"] >= scan.since:
                    yield record
            token = page.get("NextToken")
            oldest = min((_utc(r.get("StartedOn")) or scan.now for r in runs), default=scan.since)
            if not token or oldest < scan.since:
                break


def _glue_jobs(scan: Scan) -> Iterator[dict[str, Any]]:
    token: str | None = None
    while True:
        params: dict[str, Any] = {"MaxResults": 100}
        if token:
            params["NextToken"] = token
        page = scan.call("glue", "GetJobs", **params)
        yield from page.get("Jobs", [])
        token = page.get("NextToken")
        if not token:
            return


def _glue_record(scan: Scan, job: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    start, end = _utc(run.get("StartedOn")), _utc(run.get("CompletedOn"))
    state = GLUE_STATES.get(str(run.get("JobRunState")), "FAILED")
    worker = run.get("WorkerType") or job.get("WorkerType")
    workers = run.get("NumberOfWorkers") or job.get("NumberOfWorkers")
    if worker and workers:
        dpus = _GLUE_DPU_PER_WORKER.get(str(worker), 1.0) * float(workers)
    else:
        dpus = float(run.get("MaxCapacity") or job.get("MaxCapacity") or run.get("AllocatedCapacity") or 10)
    flex = (run.get("ExecutionClass") or job.get("ExecutionClass")) == "FLEX"
    rate = scan.prices.rate("glue:flex-dpu-hour" if flex else "glue:dpu-hour")
    if run.get("DPUSeconds") is not None and state not in ("RUNNING", "STARTING"):
        dpu_seconds = float(run["DPUSeconds"])
        method = f"DPU-seconds at ${rate:g}/DPU-hour"
    else:
        elapsed = float(run.get("ExecutionTime") or 0) if end else _seconds(start, end, scan.now)
        dpu_seconds = dpus * max(elapsed, 60.0 if end else elapsed)  # Glue bills at least one minute
        method = f"{dpus:g} DPU x seconds at ${rate:g}/DPU-hour"
    timeout = run.get("Timeout") or job.get("Timeout")
    limit = int(timeout) * 60 if timeout else None
    job_arn = f"arn:aws:glue:{scan.region}:{scan.account}:job/{job['Name']}" if scan.account else None
    tags = _glue_tags(scan, job_arn) if job_arn else {}
    return _record(
        scan,
        "glue",
        "glue",
        str(run["Id"]),
        sub_account_id=scan.account,
        name=str(job["Name"]),
        state=state,
        start_time=start,
        end_time=end,
        instance_type=str(worker) if worker else None,
        instance_count=int(workers) if workers else None,
        max_runtime_seconds=limit,
        estimated_cost=round(dpu_seconds / 3600 * rate, 6),
        projected_cost=round(dpus * limit / 3600 * rate, 6) if limit else None,
        cost_method=method,
        resource_id=job_arn,
        labels=tags,
    )


def _glue_tags(scan: Scan, arn: str) -> dict[str, str]:
    if arn not in scan.tag_cache:  # every run of a job shares the job's tags: ask once per scan
        answer = scan.call("glue", "GetTags", ResourceArn=arn)
        scan.tag_cache[arn] = {str(k): str(v) for k, v in answer.get("Tags", {}).items()}
    return scan.tag_cache[arn]


# -- Batch ------------------------------------------------------------------------------------------

BATCH_STATES = {
    "SUBMITTED": "QUEUED",
    "PENDING": "PENDING",
    "RUNNABLE": "QUEUED",
    "STARTING": "STARTING",
    "RUNNING": "RUNNING",
    "SUCCEEDED": "SUCCEEDED",
    "FAILED": "FAILED",
}


def batch_jobs(scan: Scan) -> Iterator[dict[str, Any]]:
    queues = scan.call("batch", "DescribeJobQueues").get("jobQueues", [])
    for queue in queues:
        ids = list(_batch_job_ids(scan, str(queue["jobQueueName"])))
        for chunk in range(0, len(ids), 100):
            described = scan.call("batch", "DescribeJobs", jobs=ids[chunk : chunk + 100]).get("jobs", [])
            for job in described:
                record = _batch_record(scan, job)
                if record.get("end_time") is None or record["end_time"] >= scan.since:
                    yield record


def _batch_job_ids(scan: Scan, queue: str) -> Iterator[str]:
    if scan.running_only:
        filters: list[dict[str, Any]] = []
        statuses: list[str | None] = ["RUNNING", "STARTING"]
    else:
        after = str(int(scan.since.timestamp() * 1000))
        filters = [{"name": "AFTER_CREATED_AT", "values": [after]}]
        statuses = [None]
    for status in statuses:
        token: str | None = None
        while True:
            params: dict[str, Any] = {"jobQueue": queue, "maxResults": 100}
            if status:
                params["jobStatus"] = status
            if filters:
                params["filters"] = filters
            if token:
                params["nextToken"] = token
            page = scan.call("batch", "ListJobs", **params)
            for summary in page.get("jobSummaryList", []):
                yield str(summary["jobId"])
            token = page.get("nextToken")
            if not token:
                break


def _batch_record(scan: Scan, job: dict[str, Any]) -> dict[str, Any]:
    start, end = _utc(job.get("startedAt")), _utc(job.get("stoppedAt"))
    state = BATCH_STATES.get(str(job.get("status")), "FAILED")
    container = job.get("container", {})
    needs = {str(r.get("type")): r.get("value") for r in container.get("resourceRequirements", [])}
    vcpus = float(needs.get("VCPU") or container.get("vcpus") or 1)
    memory_gb = float(needs.get("MEMORY") or container.get("memory") or 2048) / 1024
    nodes = int(job.get("nodeProperties", {}).get("numNodes") or 1)
    hourly = nodes * (vcpus * scan.prices.rate("batch:vcpu-hour") + memory_gb * scan.prices.rate("batch:gb-hour"))
    seconds = _seconds(start, end, scan.now) if start else 0.0
    limit = job.get("timeout", {}).get("attemptDurationSeconds")
    arn = str(job.get("jobArn") or "")
    return _record(
        scan,
        "batch",
        "batch",
        str(job["jobId"]),
        sub_account_id=_account(arn, scan.account),
        name=job.get("jobName"),
        state=state,
        start_time=start or _utc(job.get("createdAt")),
        end_time=end,
        instance_type=f"{vcpus:g} vCPU / {memory_gb:g} GB",
        instance_count=nodes,
        max_runtime_seconds=int(limit) if limit else None,
        estimated_cost=round(hourly * seconds / 3600, 6),
        projected_cost=round(hourly * float(limit) / 3600, 6) if limit else None,
        cost_method="vCPU and GB seconds at Fargate on-demand rates",
        resource_id=arn or None,
        labels={str(k): str(v) for k, v in (job.get("tags") or {}).items()},
    )
