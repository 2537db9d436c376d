"""Vertex AI custom jobs and Dataproc clusters and Serverless batches: running and recent, with estimated cost.

Clients, chosen on purpose:

* Dataproc: the v1 REST resources ``clusters.list`` and ``batches.list`` through ``spendwatch.gcp_rest``
  (an ``AuthorizedSession``, injectable as the ``dataproc_session`` client; each page retried on
  429/5xx with google-api-core's ``Retry``). The client library, google-cloud-dataproc, adds its
  generated code and proto-plus to every install for two list calls.
* Vertex AI: ``customJobs.list`` through ``google-auth``'s ``AuthorizedSession`` with google-api-core's
  ``Retry`` and exception mapping. The only Python client for it, ``google-cloud-aiplatform``, is a
  ~300 MB virtualenv of 48 packages (measured: ``pip install`` 39 s, 188 MB under ``google/`` alone)
  for one read-only list call; the REST resource is stable (v1) and small.

Estimates (``cost_method`` says which): a Vertex worker pool costs replica count × (machine type +
its GPUs) × the Vertex training markup per hour since ``startTime``; a Dataproc cluster costs every
node group's instances × (machine type + GPUs) plus the Dataproc premium per vCPU-hour, since it
was created (until it stopped or failed); preemptible/spot secondary workers are priced at 30 % of
on-demand. A Serverless batch costs DCU-hours (``approximateUsage`` once done; the current DCU rate ×
elapsed while it runs). Projected cost = hourly × the job's limit (Vertex ``scheduling.timeout``,
Dataproc ``autoDeleteTtl``/``autoDeleteTime``, batch ``ttl``) when it has one.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from spendwatch.collectors.base import Problem, SourceContext
from spendwatch.collectors.gcp.common import call_google, make_retry
from spendwatch.collectors.gcp.prices import PriceTable, machine_shape
from spendwatch.collectors.job_records import jobs_table, owner_of
from spendwatch.connections import gcp_credentials
from spendwatch.gcp_rest import GoogleRest, base_url, field, number, session_for

if TYPE_CHECKING:
    from spendwatch.collectors.gcp.jobs import GcpJobsConfig

SPOT_FACTOR = 0.3
VERTEX_RUNNING = ("JOB_STATE_QUEUED", "JOB_STATE_PENDING", "JOB_STATE_RUNNING")
_VERTEX_STATES = {
    "JOB_STATE_QUEUED": "QUEUED",
    "JOB_STATE_PENDING": "PENDING",
    "JOB_STATE_RUNNING": "RUNNING",
    "JOB_STATE_SUCCEEDED": "SUCCEEDED",
    "JOB_STATE_FAILED": "FAILED",
    "JOB_STATE_CANCELLING": "STOPPING",
    "JOB_STATE_CANCELLED": "CANCELLED",
    "JOB_STATE_PAUSED": "PAUSED",
    "JOB_STATE_EXPIRED": "FAILED",
    "JOB_STATE_UPDATING": "RUNNING",
    "JOB_STATE_PARTIALLY_SUCCEEDED": "SUCCEEDED",
}
_CLUSTER_STATES = {
    "CREATING": "STARTING",
    "RUNNING": "RUNNING",
    "UPDATING": "RUNNING",
    "REPAIRING": "RUNNING",
    "STARTING": "STARTING",
    "STOPPING": "STOPPING",
    "STOPPED": "STOPPED",
    "DELETING": "STOPPING",
    "ERROR": "FAILED",
    "ERROR_DUE_TO_UPDATE": "FAILED",
}
_CLUSTER_ACTIVE = {"CREATING", "RUNNING", "UPDATING", "REPAIRING", "STARTING", "ERROR_DUE_TO_UPDATE"}


def _ts(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _seconds(value: Any) -> float | None:
    """A protobuf Duration as JSON (``"3600s"``) or a timedelta, in seconds."""
    if value is None or value == "":
        return None
    if isinstance(value, timedelta):
        return value.total_seconds() or None
    text = str(value)
    return float(text[:-1]) if text.endswith("s") else float(text)


def _hours(start: datetime | None, end: datetime) -> float:
    return 0.0 if start is None else max((end - start).total_seconds(), 0.0) / 3600


# -- Vertex AI ------------------------------------------------------------------------------------


def _vertex_base(config: GcpJobsConfig, region: str) -> str:
    return config.gcp.endpoints.get("aiplatform") or f"https://{region}-aiplatform.googleapis.com"


def _vertex_session(config: GcpJobsConfig, context: SourceContext) -> Any:
    injected = context.clients.get("vertex_session")
    if injected is not None:
        return injected
    from google.auth.transport.requests import AuthorizedSession

    return AuthorizedSession(gcp_credentials(config.gcp))


def _vertex_list(
    config: GcpJobsConfig, context: SourceContext, project: str, region: str, filter_: str
) -> list[dict[str, Any]]:
    from google.api_core import exceptions as gexc

    session = _vertex_session(config, context)
    url = f"{_vertex_base(config, region)}/v1/projects/{project}/locations/{region}/customJobs"
    retry = make_retry(config.retry)
    jobs: list[dict[str, Any]] = []
    token = ""
    while True:
        params = {"filter": filter_, "pageSize": str(config.page_size)}
        if token:
            params["pageToken"] = token

        def page(params: dict[str, str] = params) -> dict[str, Any]:
            response = session.get(url, params=params, timeout=60)
            if response.status_code >= 400:
                raise gexc.from_http_response(response)
            body: dict[str, Any] = response.json()
            return body

        body = call_google(
            retry(page),
            source=config.name,
            doing="listing Vertex AI custom jobs",
            method="aiplatform.customJobs.list",
            resource=f"projects/{project}/locations/{region}",
        )
        context.count("gcp_api_calls")
        jobs.extend(body.get("customJobs", []))
        token = body.get("nextPageToken", "")
        if not token:
            return jobs


def _vertex_record(config: GcpJobsConfig, prices: PriceTable, job: dict[str, Any], now: datetime) -> dict[str, Any]:
    spec = job.get("jobSpec", {})
    hourly = 0.0
    unknown: list[str] = []
    machine_types, replicas = [], 0
    for pool in spec.get("workerPoolSpecs", []):
        machine = pool.get("machineSpec", {})
        count = int(pool.get("replicaCount") or 0)
        machine_type = machine.get("machineType", "")
        base = prices.machine_hourly(machine_type)
        if base is None:
            unknown.append(machine_type)
            base = 0.0
        gpus = 0 if prices.includes_gpus(machine_type) else int(machine.get("acceleratorCount") or 0)
        gpu_price = prices.gpu_hourly(machine.get("acceleratorType", "")) if gpus else 0.0
        if gpus and gpu_price is None:
            unknown.append(str(machine.get("acceleratorType")))
            gpu_price = 0.0
        hourly += count * (base + gpus * (gpu_price or 0.0)) * prices.vertex_training_markup
        machine_types.append(machine_type)
        replicas += count
    state = _VERTEX_STATES.get(job.get("state", ""), job.get("state", "UNKNOWN").removeprefix("JOB_STATE_"))
    start = _ts(job.get("startTime"))
    end = _ts(job.get("endTime"))
    so_far = hourly * _hours(start, end or now)
    timeout = _seconds(spec.get("scheduling", {}).get("timeout"))
    projected = hourly * timeout / 3600 if timeout and end is None else (so_far if end else None)
    labels = job.get("labels") or {}
    owner, owner_source = owner_of(labels, config.owner_tags)
    method = f"replicas × (machine + GPUs) × Vertex markup {prices.vertex_training_markup} × hours ({prices.source})"
    if unknown:
        method += f"; no price for {', '.join(sorted(set(unknown)))}"
    name = job["name"]
    return {
        "platform": "vertex",
        "job_id": name,
        "provider": "gcp",
        "sub_account_id": name.split("/")[1],
        "region_id": name.split("/")[3],
        "name": job.get("displayName"),
        "owner": owner,
        "owner_source": owner_source,
        "user": spec.get("serviceAccount"),
        "state": state,
        "start_time": start or _ts(job.get("createTime")),
        "end_time": end,
        "instance_type": ",".join(machine_types) or None,
        "instance_count": replicas,
        "max_runtime_seconds": int(timeout) if timeout else None,
        "estimated_cost": so_far,
        "projected_cost": projected,
        "cost_method": method,
        "billing_currency": prices.currency,
        "resource_id": name,
        "labels": labels,
    }


def _vertex_records(
    config: GcpJobsConfig, context: SourceContext, projects: list[str], prices: PriceTable, since: datetime | None
) -> list[dict[str, Any]]:
    running = " OR ".join(f'state="{s}"' for s in VERTEX_RUNNING)
    filters = [running]
    if since is not None:
        filters.append(f'update_time>"{since.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"')
    now = context.clock.now()
    records: dict[str, dict[str, Any]] = {}
    for project in projects:
        for region in config.regions:
            for filter_ in filters:
                for job in _vertex_list(config, context, project, region, filter_):
                    record = _vertex_record(config, prices, job, now)
                    records[record["job_id"]] = record
    return list(records.values())


def collect_vertex(
    config: GcpJobsConfig,
    context: SourceContext,
    projects: list[str],
    prices: PriceTable,
    since: datetime,
    until: datetime,
) -> Iterator[pa.Table | Problem]:
    del until
    yield jobs_table(_vertex_records(config, context, projects, prices, since))


def running_vertex_jobs(
    config: GcpJobsConfig, context: SourceContext, projects: list[str], prices: PriceTable
) -> pa.Table:
    return jobs_table(_vertex_records(config, context, projects, prices, None))


# -- Dataproc -------------------------------------------------------------------------------------


def _dataproc_rest(config: GcpJobsConfig, context: SourceContext, region: str) -> GoogleRest:
    """Dataproc's regional REST endpoint through the injected ``dataproc_session`` or a new authorised one."""
    session = context.clients.get("dataproc_session") or session_for(config.gcp)
    return GoogleRest(session, base_url(config.gcp, "dataproc", region), retry=make_retry(config.retry))


def _group_hourly(prices: PriceTable, group: dict[str, Any], unknown: list[str]) -> tuple[float, int, str | None]:
    count = number(group.get("numInstances"))
    if not count:
        return 0.0, 0, None
    machine_type = str(group.get("machineTypeUri") or "").rsplit("/", 1)[-1]
    base = prices.machine_hourly(machine_type)
    if base is None:
        unknown.append(machine_type or "(no machine type)")
        base = 0.0
    gpus = 0.0
    for accelerator in [] if prices.includes_gpus(machine_type) else group.get("accelerators") or []:
        kind = str(accelerator.get("acceleratorTypeUri") or "").rsplit("/", 1)[-1]
        price = prices.gpu_hourly(kind)
        if price is None:
            unknown.append(kind)
            price = 0.0
        gpus += number(accelerator.get("acceleratorCount")) * price
    shape = machine_shape(machine_type)
    premium = (shape.vcpus if shape else 0) * prices.dataproc_vcpu_hour
    factor = SPOT_FACTOR if group.get("preemptibility") in ("PREEMPTIBLE", "SPOT") else 1.0
    return count * ((base + gpus) * factor + premium), count, machine_type


def _cluster_record(
    config: GcpJobsConfig, prices: PriceTable, cluster: dict[str, Any], region: str, now: datetime
) -> dict[str, Any]:
    unknown: list[str] = []
    hourly, instances, types = 0.0, 0, []
    settings = cluster.get("config") or {}
    for group in ("masterConfig", "workerConfig", "secondaryWorkerConfig"):
        cost, count, machine_type = _group_hourly(prices, settings.get(group) or {}, unknown)
        hourly += cost
        instances += count
        if machine_type:
            types.append(machine_type)
    raw_state = str(field(cluster, "status", "state") or "UNKNOWN")
    history = [t for h in cluster.get("statusHistory") or [] if (t := _ts(h.get("stateStartTime"))) is not None]
    state_since = _ts(field(cluster, "status", "stateStartTime"))
    created = min(history) if history else state_since
    end = now if raw_state in _CLUSTER_ACTIVE else state_since or now
    so_far = hourly * _hours(created, end)
    ttl = _seconds(field(settings, "lifecycleConfig", "autoDeleteTtl"))
    delete_at = _ts(field(settings, "lifecycleConfig", "autoDeleteTime"))
    if delete_at is None and ttl and created:
        delete_at = created + timedelta(seconds=ttl)
    projected = hourly * _hours(created, delete_at) if delete_at and raw_state in _CLUSTER_ACTIVE else None
    labels = dict(cluster.get("labels") or {})
    owner, owner_source = owner_of(labels, config.owner_tags)
    method = f"nodes × (machine + GPUs) + Dataproc ${prices.dataproc_vcpu_hour}/vCPU-hour × hours ({prices.source})"
    if unknown:
        method += f"; no price for {', '.join(sorted(set(unknown)))}"
    project, name = cluster.get("projectId", ""), cluster.get("clusterName", "")
    resource = f"projects/{project}/regions/{region}/clusters/{name}"
    return {
        "platform": "dataproc",
        "job_id": f"{resource}/{cluster.get('clusterUuid', '')}",
        "provider": "gcp",
        "sub_account_id": project,
        "region_id": region,
        "name": name,
        "owner": owner,
        "owner_source": owner_source,
        "state": _CLUSTER_STATES.get(raw_state, raw_state),
        "start_time": created,
        "end_time": None if raw_state in _CLUSTER_ACTIVE else end,
        "instance_type": ",".join(dict.fromkeys(types)) or None,
        "instance_count": instances,
        "max_runtime_seconds": int((delete_at - created).total_seconds()) if delete_at and created else None,
        "estimated_cost": so_far,
        "projected_cost": projected,
        "cost_method": method,
        "billing_currency": prices.currency,
        "resource_id": resource,
        "labels": labels,
    }


def _batch_record(config: GcpJobsConfig, prices: PriceTable, batch: dict[str, Any], now: datetime) -> dict[str, Any]:
    state = str(batch.get("state") or "STATE_UNSPECIFIED")
    created = _ts(batch.get("createTime"))
    ended = None if state in ("PENDING", "RUNNING", "CANCELLING") else _ts(batch.get("stateTime"))
    price = prices.dataproc_serverless_dcu_hour
    rate = number(field(batch, "runtimeInfo", "currentUsage", "milliDcu")) / 1000 * price  # $/hour at the current size
    used = number(field(batch, "runtimeInfo", "approximateUsage", "milliDcuSeconds"))
    if used:
        so_far = used / 1000 / 3600 * price
        method = f"approximate DCU-hours × ${price}/DCU-hour"
    else:
        so_far = rate * _hours(created, ended or now)
        method = f"current DCUs × elapsed × ${price}/DCU-hour"
    ttl = _seconds(field(batch, "environmentConfig", "executionConfig", "ttl"))
    projected = rate * ttl / 3600 if ttl and ended is None and rate else (so_far if ended else None)
    labels = dict(batch.get("labels") or {})
    creator = batch.get("creator") or None
    owner, owner_source = owner_of(labels, config.owner_tags, (creator, "creator"))
    name = str(batch.get("name") or "")
    parts = name.split("/")
    return {
        "platform": "dataproc",
        "job_id": name,
        "provider": "gcp",
        "sub_account_id": parts[1] if len(parts) > 1 else None,
        "region_id": parts[3] if len(parts) > 3 else None,
        "name": parts[-1],
        "user": creator,
        "owner": owner,
        "owner_source": owner_source,
        "state": {"CANCELLING": "STOPPING"}.get(state, state),
        "start_time": created,
        "end_time": ended,
        "max_runtime_seconds": int(ttl) if ttl else None,
        "estimated_cost": so_far,
        "projected_cost": projected,
        "cost_method": method,
        "billing_currency": prices.currency,
        "resource_id": name,
        "labels": labels,
    }


def _dataproc_records(
    config: GcpJobsConfig, context: SourceContext, projects: list[str], prices: PriceTable, since: datetime | None
) -> list[dict[str, Any]]:
    now = context.clock.now()
    records: list[dict[str, Any]] = []
    for project in projects:
        for region in config.regions:
            rest = _dataproc_rest(config, context, region)
            if config.dataproc.clusters:
                params = {"pageSize": str(config.page_size)}
                if since is None:
                    params["filter"] = "status.state = ACTIVE"
                clusters = _listed(
                    config, context, rest, f"v1/projects/{project}/regions/{region}/clusters", "clusters", params,
                    doing="listing Dataproc clusters", method="dataproc.clusters.list",
                    resource=f"projects/{project}/regions/{region}",
                )  # fmt: skip
                records += [_cluster_record(config, prices, c, region, now) for c in clusters]
            if config.dataproc.batches:
                filters = ["state = RUNNING", "state = PENDING"]
                if since is not None:
                    filters.append(f'create_time > "{since.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"')
                seen: dict[str, dict[str, Any]] = {}
                parent = f"projects/{project}/locations/{region}"
                for batch_filter in filters:
                    params = {"filter": batch_filter, "pageSize": str(config.page_size)}
                    batches = _listed(
                        config, context, rest, f"v1/{parent}/batches", "batches", params,
                        doing="listing Dataproc Serverless batches", method="dataproc.batches.list", resource=parent,
                    )  # fmt: skip
                    for batch in batches:
                        record = _batch_record(config, prices, batch, now)
                        seen[record["job_id"]] = record
                records += list(seen.values())
    return records


def _listed(
    config: GcpJobsConfig,
    context: SourceContext,
    rest: GoogleRest,
    path: str,
    items: str,
    params: dict[str, str],
    *,
    doing: str,
    method: str,
    resource: str,
) -> list[dict[str, Any]]:
    """Every page of a list call (each page retried on its own), counted per request."""
    return call_google(
        lambda: list(rest.pages(path, items, params, page=lambda: context.count("gcp_api_calls"))),
        source=config.name,
        doing=doing,
        method=method,
        resource=resource,
    )


def collect_dataproc(
    config: GcpJobsConfig,
    context: SourceContext,
    projects: list[str],
    prices: PriceTable,
    since: datetime,
    until: datetime,
) -> Iterator[pa.Table | Problem]:
    del until
    yield jobs_table(_dataproc_records(config, context, projects, prices, since))


def running_dataproc(
    config: GcpJobsConfig, context: SourceContext, projects: list[str], prices: PriceTable
) -> pa.Table:
    return jobs_table(_dataproc_records(config, context, projects, prices, None))
