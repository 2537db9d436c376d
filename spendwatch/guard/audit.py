"""``spendwatch guard audit``: prevention before cure — what runs without a native limit, and the fix.

* **Athena** workgroups without ``BytesScannedCutoffPerQuery`` (Athena cancels a query that scans
  past it). Fix: ``aws athena update-work-group … BytesScannedCutoffPerQuery=…``; the guard can set it
  itself (``--fix-athena-cutoff BYTES``, a dry run unless ``--apply``).
* **BigQuery** projects without a custom query quota (``QueryUsagePerDay`` / ``QueryUsagePerUserPerDay``
  are unlimited by default). Read through the Cloud Quotas API v1 (``quotaInfos.get``) over
  google-auth's ``AuthorizedSession``: the Python client (``google-cloud-quotas``) is not a dependency
  and the REST resource is small and stable. Fix: ``gcloud beta quotas preferences create …``.
* **SageMaker** training and processing jobs (running, or created within the lookback) without
  ``StoppingCondition.MaxRuntimeInSeconds`` — or with one longer than ``max_runtime``. A running job's
  limit cannot be changed; the fix is for the job definition (``--stopping-condition``, ``max_run=``).
* **Kubernetes** training workloads running now without ``activeDeadlineSeconds`` (a Job's, a
  KubeRay RayJob's, a Kubeflow job's ``runPolicy``), or with one longer than ``max_runtime``: the
  controller stops a workload at its deadline. A RayCluster, a Deployment or a bare pod has no such
  limit: they are listed only when they hold GPUs, with the guard as their limit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from spendwatch.collectors.aws.api import AwsApi
from spendwatch.collectors.aws.jobs import AwsJobsConfig
from spendwatch.collectors.base import SourceContext
from spendwatch.collectors.gcp.jobs import GcpJobsConfig, projects_for
from spendwatch.collectors.k8s.jobs import KubernetesJobsConfig, cluster_client, list_running
from spendwatch.connections import gcp_credentials
from spendwatch.errors import ConfigError, InputError, SourceError
from spendwatch.guard.watch import watched_sources
from spendwatch.store import Store

ATHENA_MINIMUM_CUTOFF = 10_000_000  # Athena refuses a per-query cutoff under 10 MB
MIB = 1 << 20
TIB = 1 << 40
UNLIMITED = 1 << 62
BIGQUERY_QUOTAS = ("QueryUsagePerDay", "QueryUsagePerUserPerDay")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|PB|KiB|MiB|GiB|TiB|PiB)?\s*$")
_UNITS = {
    "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "PB": 10**15,
    "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40, "PiB": 1 << 50,
}  # fmt: skip


def parse_bytes(text: str) -> int:
    """``10000000``, ``500GB``, ``1TiB`` → bytes; an ``InputError`` naming the value otherwise."""
    match = _SIZE.match(text)
    if match is None:
        raise InputError(f"--fix-athena-cutoff: {text!r} is not a size (e.g. 500GB, 1TiB, 10000000)")
    value = int(float(match.group(1)) * _UNITS[match.group(2) or "B"])
    if value < ATHENA_MINIMUM_CUTOFF:
        raise InputError(f"--fix-athena-cutoff: {text!r} is under Athena's 10 MB minimum")
    return value


@dataclass(frozen=True)
class Finding:
    platform: str  # athena, bigquery, sagemaker
    where: str  # account/region or project
    resource: str
    problem: str
    fix: str


@dataclass
class AuditReport:
    findings: list[Finding] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)  # platform → resources looked at
    applied: list[str] = field(default_factory=list)
    planned: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def count(self, platform: str, n: int = 1) -> None:
        self.checked[platform] = self.checked.get(platform, 0) + n


@dataclass(frozen=True)
class AuditOptions:
    fix_athena_cutoff: int | None = None
    apply: bool = False
    bigquery_daily: int = 10 * TIB  # what the printed fix proposes, per project per day
    sagemaker_lookback: timedelta = timedelta(days=7)
    max_runtime: timedelta = timedelta(days=3)


def audit(
    config: Any,
    *,
    now: datetime,
    options: AuditOptions | None = None,
    store: Store | None = None,
    clients: Mapping[str, Any] | None = None,
) -> AuditReport:
    """Audit every source the guard watches."""
    options = options or AuditOptions()
    report = AuditReport()
    for source in watched_sources(config, config.guard):
        seams = dict((clients or {}).get(source.name) or {})
        try:
            if isinstance(source, AwsJobsConfig):
                _audit_aws(source, seams, now, options, report)
            elif isinstance(source, KubernetesJobsConfig):
                _audit_k8s(source, seams, now, options, report)
            else:
                _audit_gcp(source, seams, store, options, report)
        except (SourceError, ConfigError) as exc:
            report.problems.append(f"{source.name}: {exc}")
    return report


# -- AWS ---------------------------------------------------------------------------------------------


class _Clock:
    def __init__(self, now: datetime) -> None:
        self._now = now

    def now(self) -> datetime:
        return self._now


def _audit_aws(
    source: AwsJobsConfig, seams: dict[str, Any], now: datetime, options: AuditOptions, report: AuditReport
) -> None:
    api = AwsApi(source.name, source.aws, SourceContext(clock=_Clock(now), store=None, clients=seams))  # type: ignore[arg-type]
    regions = list(source.regions) or [source.aws.region or getattr(api.session, "region_name", None) or "us-east-1"]
    for region in regions:
        if source.athena:
            _guarded(report, f"{source.name} athena {region}", lambda r=region: _athena(api, r, options, report))
        if source.sagemaker:
            _guarded(
                report, f"{source.name} sagemaker {region}", lambda r=region: _sagemaker(api, r, now, options, report)
            )


def _guarded(report: AuditReport, label: str, body: Any) -> None:
    try:
        body()
    except SourceError as exc:
        report.problems.append(f"{label}: {exc}")


def _athena(api: AwsApi, region: str, options: AuditOptions, report: AuditReport) -> None:
    client = api.client("athena", region=region)
    token: str | None = None
    names: list[str] = []
    while True:
        params: dict[str, Any] = {"MaxResults": 50}
        if token:
            params["NextToken"] = token
        page = api.call(client, "ListWorkGroups", **params)
        names += [str(g["Name"]) for g in page.get("WorkGroups", []) if g.get("State", "ENABLED") == "ENABLED"]
        token = page.get("NextToken")
        if not token:
            break
    for name in names:
        report.count("athena")
        configuration = api.call(client, "GetWorkGroup", WorkGroup=name)["WorkGroup"].get("Configuration", {})
        if configuration.get("BytesScannedCutoffPerQuery"):
            continue
        proposed = options.fix_athena_cutoff or TIB
        report.findings.append(
            Finding(
                "athena",
                region,
                name,
                "no BytesScannedCutoffPerQuery: a query may scan (and bill) without bound",
                f"aws athena update-work-group --region {region} --work-group {name} "
                f"--configuration-updates BytesScannedCutoffPerQuery={proposed}",
            )
        )
        if options.fix_athena_cutoff is None:
            continue
        what = f"athena workgroup {name} ({region}): BytesScannedCutoffPerQuery = {options.fix_athena_cutoff:,} bytes"
        if not options.apply:
            report.planned.append(f"would set {what} (dry run; --apply sets it)")
            continue
        api.call(
            client,
            "UpdateWorkGroup",
            WorkGroup=name,
            ConfigurationUpdates={"BytesScannedCutoffPerQuery": options.fix_athena_cutoff},
        )
        report.applied.append(f"set {what}")


_SAGEMAKER = (
    ("training", "ListTrainingJobs", "TrainingJobSummaries", "TrainingJobName", "DescribeTrainingJob"),
    ("processing", "ListProcessingJobs", "ProcessingJobSummaries", "ProcessingJobName", "DescribeProcessingJob"),
)


def _sagemaker(api: AwsApi, region: str, now: datetime, options: AuditOptions, report: AuditReport) -> None:
    client = api.client("sagemaker", region=region)
    limit = int(options.max_runtime.total_seconds())
    for kind, list_op, key, name_key, describe_op in _SAGEMAKER:
        token: str | None = None
        while True:
            params: dict[str, Any] = {"MaxResults": 100, "CreationTimeAfter": now - options.sagemaker_lookback}
            if token:
                params["NextToken"] = token
            page = api.call(client, list_op, **params)
            for summary in page.get(key, []):
                name = str(summary[name_key])
                report.count("sagemaker")
                described = api.call(client, describe_op, **{name_key: name})
                runtime = (described.get("StoppingCondition") or {}).get("MaxRuntimeInSeconds")
                finding = _sagemaker_finding(kind, name, runtime, limit, region)
                if finding is not None:
                    report.findings.append(finding)
            token = page.get("NextToken")
            if not token:
                break


def _sagemaker_finding(kind: str, name: str, runtime: Any, limit: int, region: str) -> Finding | None:
    if runtime and int(runtime) <= limit:
        return None
    problem = (
        "no StoppingCondition.MaxRuntimeInSeconds: it runs until someone stops it"
        if not runtime
        else f"MaxRuntimeInSeconds is {int(runtime):,} s, longer than the {limit:,} s this audit allows"
    )
    sdk = "Estimator(max_run=…)" if kind == "training" else "Processor(max_runtime_in_seconds=…)"
    fix = (
        f"a running job's limit cannot change: submit the next {kind} job with "
        f"--stopping-condition MaxRuntimeInSeconds={limit} (SageMaker Python SDK: {sdk}); "
        f"stop this one if it must not run on: aws sagemaker stop-{kind}-job --region {region} "
        f"--{kind}-job-name {name}"
    )
    return Finding("sagemaker", region, f"{kind}:{name}", problem, fix)


# -- Kubernetes ----------------------------------------------------------------------------------------

# Where each kind keeps its deadline (the controller fails the workload once it has run this long).
_DEADLINES = {
    "Job": "spec.activeDeadlineSeconds",
    "RayJob": "spec.activeDeadlineSeconds",
    "PyTorchJob": "spec.runPolicy.activeDeadlineSeconds",
    "TFJob": "spec.runPolicy.activeDeadlineSeconds",
    "Pod": "spec.activeDeadlineSeconds",
}


def _audit_k8s(
    source: KubernetesJobsConfig, seams: dict[str, Any], now: datetime, options: AuditOptions, report: AuditReport
) -> None:
    limit = int(options.max_runtime.total_seconds())
    for cluster in source.clusters:
        try:
            records, _, _ = list_running(source, cluster, cluster_client(source, cluster, seams), now=now)
        except SourceError as exc:
            report.problems.append(f"{source.name} {cluster}: {exc}")
            continue
        for record in records:
            report.count("kubernetes")
            finding = _k8s_finding(record, limit)
            if finding is not None:
                report.findings.append(finding)


def _k8s_finding(record: Mapping[str, Any], limit: int) -> Finding | None:
    labels = record.get("labels") or {}
    kind, namespace, cluster = labels.get("k8s:kind"), labels.get("k8s:namespace"), labels.get("k8s:cluster")
    deadline = record.get("max_runtime_seconds")
    where = f"{cluster}/{namespace}"
    resource = f"{kind}/{record['name']}"
    field = _DEADLINES.get(str(kind))
    if field is None or (kind == "Pod" and not labels.get("k8s:gpus")):
        if not labels.get("k8s:gpus"):
            return None  # a service or a CPU pod: its cost is the billing sources' business
        return Finding(
            "kubernetes", where, resource,
            f"holds {labels['k8s:gpus']} GPU(s) and a {kind} has no deadline: it runs until someone stops it",
            "the guard's job_cost / max_runtime caps are its limit; or run it as a RayJob / Job with "
            "activeDeadlineSeconds",
        )  # fmt: skip
    if deadline and int(deadline) <= limit:
        return None
    problem = (
        f"no {field}: it runs until someone stops it"
        if not deadline
        else f"{field} is {int(deadline):,} s, longer than the {limit:,} s this audit allows"
    )
    fix = (
        f"kubectl --context {cluster} -n {namespace} patch {str(kind).lower()} {record['name']} --type merge "
        f"-p '{_deadline_patch(field, limit)}' (and set it in the manifest that creates it)"
    )
    return Finding("kubernetes", where, resource, problem, fix)


def _deadline_patch(field: str, seconds: int) -> str:
    keys = field.split(".")
    body: Any = seconds
    for key in reversed(keys):
        body = {key: body}
    return json.dumps(body, separators=(",", ":"))


# -- BigQuery ------------------------------------------------------------------------------------------


def _audit_gcp(
    source: GcpJobsConfig, seams: dict[str, Any], store: Store | None, options: AuditOptions, report: AuditReport
) -> None:
    if not source.bigquery.enabled:
        return
    session = seams.get("quotas_session")
    if session is None:
        from google.auth.transport.requests import AuthorizedSession

        session = AuthorizedSession(gcp_credentials(source.gcp))
    base = source.gcp.endpoints.get("cloudquotas") or "https://cloudquotas.googleapis.com"
    for project in projects_for(source, store):
        report.count("bigquery")
        values = {quota: _quota_value(session, base, project, quota) for quota in BIGQUERY_QUOTAS}
        if any(v is not None and 0 <= v < UNLIMITED for v in values.values()):
            continue
        mib = max(options.bigquery_daily // MIB, 1)
        report.findings.append(
            Finding(
                "bigquery",
                project,
                "QueryUsagePerDay",
                "no custom query quota: on-demand queries may bill any number of bytes a day",
                f"gcloud beta quotas preferences create --project={project} --service=bigquery.googleapis.com "
                f"--quota-id=QueryUsagePerDay --preferred-value={mib} "
                f"--preference-id=spendwatch-query-usage-per-day  # {mib} MiB = "
                f"{options.bigquery_daily / TIB:g} TiB a day",
            )
        )


def _quota_value(session: Any, base: str, project: str, quota: str) -> int | None:
    """The effective value of a BigQuery quota in a project (-1 or a huge number: unlimited)."""
    url = f"{base}/v1/projects/{project}/locations/global/services/bigquery.googleapis.com/quotaInfos/{quota}"
    response = session.get(url, timeout=30)
    if response.status_code in (401, 403):
        raise SourceError(
            f"permission denied reading {quota} of project {project}: the credentials need "
            f"cloudquotas.quotas.get (roles/cloudquotas.viewer) (HTTP {response.status_code})"
        )
    if response.status_code == 404:
        return None
    if response.status_code >= 400:
        raise SourceError(f"Cloud Quotas quotaInfos.get {quota} of {project} failed: HTTP {response.status_code}")
    body = response.json()
    values = []
    for info in body.get("dimensionsInfos", []):
        value = (info.get("details") or {}).get("value")
        if value is not None:
            values.append(int(value))
    return min(values) if values else None
