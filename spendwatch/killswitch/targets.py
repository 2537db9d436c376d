"""From what the records name (ARNs, resource paths, job records) to canonical kill-switch targets.

Canonical ids, per resource type:

==========================  ============================================================
ec2-instance                ``i-0abc…`` (region and account alongside)
autoscaling-group           group name
rds-instance                DB instance identifier
redshift-cluster            cluster identifier
emr-cluster                 ``j-…``
sagemaker-*-job / notebook  job / notebook instance name
athena-query                query execution id
glue-job-run                ``<job name>/<run id>``
batch-job                   job id;  batch-job-queue: queue name
bigquery-job                job id (project = account, location = region)
gce-instance                ``projects/<p>/zones/<z>/instances/<name>``
dataproc-cluster            ``projects/<p>/regions/<r>/clusters/<name>``
vertex-custom-job           ``projects/<p>/locations/<l>/customJobs/<id>``
gke-node-pool               ``projects/<p>/locations/<l>/clusters/<c>/nodePools/<np>``
gcp-project                 project id;  aws-account: account id
k8s-*                       ``<namespace>/<name>`` (account = cluster, region = namespace);
                            records name them ``k8s://<cluster>/<namespace>/<Kind>/<name>``
==========================  ============================================================
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

_ARN = re.compile(r"^arn:aws[a-z-]*:(?P<service>[a-z0-9-]+):(?P<region>[a-z0-9-]*):(?P<account>\d*):(?P<resource>.+)$")
_GCP_PATHS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "gke-node-pool",
        re.compile(
            r"projects/(?P<p>[^/]+)/(?:locations|zones)/(?P<l>[^/]+)/clusters/(?P<c>[^/]+)/nodePools/(?P<n>[^/]+)$"
        ),
    ),
    ("gce-instance", re.compile(r"projects/(?P<p>[^/]+)/zones/(?P<l>[^/]+)/instances/(?P<n>[^/]+)$")),
    ("dataproc-cluster", re.compile(r"projects/(?P<p>[^/]+)/regions/(?P<l>[^/]+)/clusters/(?P<n>[^/]+)$")),
    ("vertex-custom-job", re.compile(r"projects/(?P<p>[^/]+)/locations/(?P<l>[^/]+)/customJobs/(?P<n>[^/]+)$")),
)
_SAGEMAKER = {
    "training-job": "sagemaker-training-job",
    "processing-job": "sagemaker-processing-job",
    "transform-job": "sagemaker-transform-job",
    "notebook-instance": "sagemaker-notebook-instance",
}
PLATFORM_TYPES: dict[str, str] = {
    "bigquery": "bigquery-job",
    "athena": "athena-query",
    "glue": "glue-job-run",
    "batch": "batch-job",
    "emr": "emr-cluster",
    "vertex": "vertex-custom-job",
    "vertex-ai": "vertex-custom-job",
    "dataproc": "dataproc-cluster",
    "sagemaker": "sagemaker-training-job",
    "sagemaker-training": "sagemaker-training-job",
    "sagemaker-processing": "sagemaker-processing-job",
    "sagemaker-transform": "sagemaker-transform-job",
    "ec2": "ec2-instance",
    "gce": "gce-instance",
    "compute": "gce-instance",
    "gke": "gke-node-pool",
    "redshift": "redshift-cluster",
    "rds": "rds-instance",
}


@dataclass(frozen=True)
class Located:
    """A resource recognised in a record: its type, canonical id, account and region."""

    provider: str
    resource_type: str
    resource_id: str
    account: str | None
    region: str | None


def _from_arn(arn: str) -> Located | None:
    match = _ARN.match(arn)
    if match is None:
        return None
    service, region, account, resource = (
        match["service"],
        match["region"] or None,
        match["account"] or None,
        match["resource"],
    )

    def found(kind: str, rid: str) -> Located:
        return Located("aws", kind, rid, account, region)

    kind, _, rest = resource.partition("/")
    if service == "ec2" and kind == "instance":
        return found("ec2-instance", rest)
    if service == "rds" and resource.startswith("db:"):
        return found("rds-instance", resource[3:])
    if service == "redshift" and resource.startswith("cluster:"):
        return found("redshift-cluster", resource[8:])
    if service == "elasticmapreduce" and kind == "cluster":
        return found("emr-cluster", rest)
    if service == "sagemaker" and kind in _SAGEMAKER:
        return found(_SAGEMAKER[kind], rest)
    if service == "autoscaling" and "autoScalingGroupName/" in resource:
        return found("autoscaling-group", resource.split("autoScalingGroupName/", 1)[1])
    if service == "batch" and kind == "job":
        return found("batch-job", rest)
    if service == "batch" and kind == "job-queue":
        return found("batch-job-queue", rest)
    if service == "athena" and kind == "query":  # not a real ARN form, but what some exports write
        return found("athena-query", rest)
    return None


def locate(
    resource_id: str | None, *, provider: str | None = None, account: str | None = None, region: str | None = None
) -> Located | None:
    """Recognise a resource id as it appears in cost lines or job records; ``None`` if it is not actionable."""
    if not resource_id:
        return None
    value = resource_id.strip()
    if value.startswith("arn:"):
        return _from_arn(value)
    if value.startswith("k8s://"):
        from spendwatch.collectors.k8s.ids import parse_workload

        ref = parse_workload(value)
        if ref is None:
            return None
        return Located("kubernetes", ref.kind.resource_type, ref.resource_id, ref.cluster, ref.namespace)
    path = value.split("googleapis.com/", 1)[-1].lstrip("/")
    for kind, pattern in _GCP_PATHS:
        match = pattern.search(path)
        if match is not None:
            groups = match.groupdict()
            canonical = match.group(0)
            return Located("gcp", kind, canonical, groups["p"], groups["l"])
    if provider in (None, "aws") and re.fullmatch(r"i-[0-9a-f]{8,17}", value):
        return Located("aws", "ec2-instance", value, account, region)
    if provider in (None, "aws") and re.fullmatch(r"j-[0-9A-Z]{8,16}", value):
        return Located("aws", "emr-cluster", value, account, region)
    return None


def _bigquery_id(job_id: str, project: str | None, location: str | None) -> tuple[str, str | None, str | None]:
    """``proj:US.job_123`` → (``job_123``, ``proj``, ``US``)."""
    if ":" in job_id:
        head, _, rest = job_id.partition(":")
        project = project or head
        job_id = rest
    if "." in job_id:
        head, _, rest = job_id.partition(".")
        location = location or head
        job_id = rest
    return job_id, project, location


def locate_job(
    platform: str,
    job_id: str,
    *,
    provider: str,
    account: str | None,
    region: str | None,
    name: str | None,
    resource_id: str | None,
) -> Located | None:
    """The actionable resource behind a job record (the query, the run, the cluster …)."""
    by_id = locate(resource_id, provider=provider, account=account, region=region)
    platform = platform.lower()
    kind = PLATFORM_TYPES.get(platform)
    if by_id is not None and (kind is None or by_id.resource_type == kind or platform in ("sagemaker", "emr")):
        return Located(
            by_id.provider, by_id.resource_type, by_id.resource_id, by_id.account or account, by_id.region or region
        )
    if kind is None:
        return None
    if kind == "bigquery-job":
        bare, project, location = _bigquery_id(job_id, account, region)
        return Located("gcp", kind, bare, project, location)
    if kind == "glue-job-run":
        return Located("aws", kind, f"{name}/{job_id}", account, region) if name else None
    if kind == "vertex-custom-job":
        if account is None or region is None:
            return None
        return Located("gcp", kind, f"projects/{account}/locations/{region}/customJobs/{job_id}", account, region)
    if kind == "dataproc-cluster":
        cluster = resource_id or name
        if not cluster or account is None or region is None:
            return None
        return Located("gcp", kind, f"projects/{account}/regions/{region}/clusters/{cluster}", account, region)
    if kind == "emr-cluster":
        cluster = resource_id if resource_id and resource_id.startswith("j-") else job_id
        return Located("aws", kind, cluster, account, region) if cluster.startswith("j-") else None
    if kind in ("gce-instance", "gke-node-pool"):
        return None  # only full resource paths say where these live
    return Located(provider, kind, job_id, account, region)


def rate_and_stake(
    estimated: float | None,
    projected: float | None,
    started: datetime | None,
    now: datetime,
) -> tuple[float | None, float | None]:
    """(saving per hour, $ at stake) for a running job: its burn rate, and what finishing would still cost.

    At stake is the projected cost still to come when a projection exists, else 24 hours at the
    current rate (a job nobody stops keeps burning).
    """
    rate: float | None = None
    if estimated is not None and started is not None:
        hours = max((now - started).total_seconds() / 3600.0, 1.0 / 60.0)
        rate = estimated / hours
    if projected is not None and estimated is not None and projected >= estimated:
        return rate, projected - estimated
    if projected is not None and estimated is None:
        return rate, projected
    return rate, (rate * 24.0 if rate is not None else None)
