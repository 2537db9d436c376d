"""Running AWS work for the guard: SageMaker, EMR, Glue and Batch through ``aws_jobs.list_running``;
Athena through an incremental reader.

For each region, the lister gets the guard's rate-limited, describe-caching clients (see
``clients.AwsClientProxy``) through its ``aws:<service>`` seam, one platform at a time, so a platform
that fails is a problem for that platform and region only.

Athena has no "list running queries" call, and the lister pages back through every workgroup's
history on each call. The guard remembers which query ids it has seen: a poll reads the newest pages
only until it meets an id it already knows (everything older was seen before), describes the new
ids and the ones still running (``BatchGetQueryExecution``, 50 at a time), and nothing else. In
steady state that is two calls per workgroup per poll, however busy the workgroup is.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from spendwatch.collectors.aws.api import AwsApi
from spendwatch.collectors.aws.jobs import AwsJobsConfig, list_running
from spendwatch.collectors.aws.prices import PriceTable
from spendwatch.collectors.base import SourceContext
from spendwatch.errors import SourceError
from spendwatch.guard.clients import AwsClientProxy
from spendwatch.guard.config import GuardConfig
from spendwatch.guard.estimate import athena_costs, labels_of, scope_of
from spendwatch.guard.state import AthenaMemory, Listing, WatchState

LISTER_PLATFORMS = ("sagemaker", "emr", "glue", "batch")
_SERVICES = {
    "sagemaker": ("sagemaker",),
    "emr": ("emr",),
    "glue": ("glue",),
    "batch": ("batch",),
    "athena": ("athena",),
}
_ATHENA_RUNNING = {"QUEUED", "RUNNING"}
_MAX_PAGES = 40


class _Region:
    """The clients of one source in one region, wrapped for the guard."""

    def __init__(
        self,
        source: AwsJobsConfig,
        region: str,
        api: AwsApi,
        state: WatchState,
        now: Callable[[], datetime],
    ) -> None:
        self.source = source
        self.region = region
        self.api = api
        self.state = state
        self.now = now
        self.scope = f"{source.name}/{region}"
        self._proxies: dict[str, AwsClientProxy] = {}

    def client(self, service: str) -> AwsClientProxy:
        if service not in self._proxies:
            raw = self.api.client(service, region=self.region)
            status = self.state.batch_status.setdefault(self.scope, {})
            self._proxies[service] = AwsClientProxy(
                raw, self.state.limiter, self.state.cache, scope=self.scope, now=self.now, batch_status=status
            )
        return self._proxies[service]

    def call(self, service: str, operation: str, **params: Any) -> dict[str, Any]:
        return self.api.call(self.client(service), operation, **params)


def watch_aws(
    source: AwsJobsConfig,
    guard: GuardConfig,
    state: WatchState,
    *,
    clients: dict[str, Any],
    now: datetime,
    platforms: list[str],
) -> Listing:
    """Running jobs of the given platforms of one ``aws-jobs`` source, in every region it covers."""
    listing = Listing()
    try:
        api = _api(source, state, clients, now)
        session = api.session
    except SourceError as exc:
        listing.problems.append(f"{source.name}: {exc}")
        listing.failed |= set(platforms)
        return listing
    regions = list(source.regions) or [source.aws.region or getattr(session, "region_name", None) or "us-east-1"]
    for region in regions:
        wrapped = _Region(source, region, api, state, lambda: now)
        account = _account(wrapped)
        for platform in platforms:
            scope = scope_of("aws", platform, region, account)
            try:
                if platform == "athena":
                    records = athena_running(wrapped, guard, account, now)
                else:
                    records = _lister(wrapped, guard, platform, session, clients, now)
            except SourceError as exc:
                listing.problems.append(f"{source.name} {platform} {region}: {exc}")
                listing.failed.add(platform)
                continue
            listing.ok_scopes.add(scope)
            listing.records.extend(records)
    return listing


SESSION_REUSE = timedelta(minutes=45)  # assumed-role credentials last an hour by default


def _api(source: AwsJobsConfig, state: WatchState, clients: dict[str, Any], now: datetime) -> AwsApi:
    """The source's AWS access, its session reused between polls (a role is not re-assumed every minute)."""
    cached = state.sessions.get(source.name)
    if cached is not None and now - cached[0] < SESSION_REUSE:
        context = SourceContext(clock=_Fixed(now), store=None, clients={**clients, "boto3_session": cached[1]})  # type: ignore[arg-type]
        return AwsApi(source.name, source.aws.model_copy(update={"role_arn": None}), context)
    context = SourceContext(clock=_Fixed(now), store=None, clients=dict(clients))  # type: ignore[arg-type]
    api = AwsApi(source.name, source.aws, context)
    state.sessions[source.name] = (now, api.session)
    return api


class _Fixed:
    def __init__(self, now: datetime) -> None:
        self._now = now

    def now(self) -> datetime:
        return self._now


def _account(region: _Region) -> str | None:
    try:
        return str(region.call("sts", "GetCallerIdentity")["Account"])
    except SourceError:
        return None


def _lister(
    region: _Region, guard: GuardConfig, platform: str, session: Any, clients: dict[str, Any], now: datetime
) -> list[dict[str, Any]]:
    # The session already holds the assumed role: the lister must not assume it again from there.
    connection = region.source.aws.model_copy(update={"role_arn": None})
    config = region.source.model_copy(
        update={"regions": [region.region], "prices": {**region.source.prices, **guard.aws_prices}, "aws": connection}
    )
    seams: dict[str, Any] = {"boto3_session": session, "aws:sts": region.client("sts")}
    for service in _SERVICES[platform]:
        seams[f"aws:{service}"] = region.client(service)
    if "aws_backoff" in clients:
        seams["aws_backoff"] = clients["aws_backoff"]
    context = SourceContext(clock=_Fixed(now), store=None, clients=seams)  # type: ignore[arg-type]
    table = list_running(session, config, now=now, context=context, platforms=[platform])
    records: list[dict[str, Any]] = table.to_pylist()
    for record in records:
        record["labels"] = labels_of(record.get("labels"))
    return records


# -- Athena ------------------------------------------------------------------------------------------


def athena_running(region: _Region, guard: GuardConfig, account: str | None, now: datetime) -> list[dict[str, Any]]:
    source = region.source
    prices = PriceTable({**source.prices, **guard.aws_prices})
    workgroups = list(source.athena_workgroups) or _enabled_workgroups(region)
    records: list[dict[str, Any]] = []
    horizon = now - guard.athena_query_timeout - timedelta(minutes=5)
    for workgroup in workgroups:
        memory = region.state.athena.setdefault((source.name, region.region, workgroup), AthenaMemory())
        described = _new_and_running(region, workgroup, memory, horizon)
        if not described:
            continue
        settings = _workgroup(region, workgroup, account)
        for execution in described:
            state = str(execution.get("Status", {}).get("State"))
            if state not in _ATHENA_RUNNING:
                continue
            records.append(_athena_record(region, workgroup, execution, settings, prices, guard, account, now))
    return records


def _enabled_workgroups(region: _Region) -> list[str]:
    names: list[str] = []
    token: str | None = None
    while True:
        params: dict[str, Any] = {"MaxResults": 50}
        if token:
            params["NextToken"] = token
        page = region.call("athena", "ListWorkGroups", **params)
        names += [str(g["Name"]) for g in page.get("WorkGroups", []) if g.get("State", "ENABLED") == "ENABLED"]
        token = page.get("NextToken")
        if not token:
            return names


def _new_and_running(region: _Region, workgroup: str, memory: AthenaMemory, horizon: datetime) -> list[dict[str, Any]]:
    """Executions first seen now, plus the ones known to be running, as BatchGetQueryExecution returns them."""
    described: dict[str, dict[str, Any]] = {}
    token: str | None = None
    for _ in range(_MAX_PAGES):
        params: dict[str, Any] = {"WorkGroup": workgroup, "MaxResults": 50}
        if token:
            params["NextToken"] = token
        page = region.call("athena", "ListQueryExecutions", **params)
        ids = [str(i) for i in page.get("QueryExecutionIds", [])]
        unseen = [i for i in ids if i not in memory.seen]
        oldest = _oldest(_describe(region, unseen, memory, described))
        token = page.get("NextToken")
        known_below = memory.initialised and len(unseen) < len(ids)
        if not token or known_below or (oldest is not None and oldest < horizon):
            break
    refresh = sorted(i for i in memory.running if i not in described)
    _describe(region, refresh, memory, described)
    memory.initialised = True
    return list(described.values())


def _oldest(executions: list[dict[str, Any]]) -> datetime | None:
    """The oldest submission time among ``executions`` (pages come newest first)."""
    times = [_utc(e.get("Status", {}).get("SubmissionDateTime")) for e in executions]
    found = [t for t in times if t is not None]
    return min(found) if found else None


def _describe(
    region: _Region, ids: list[str], memory: AthenaMemory, into: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for start in range(0, len(ids), 50):
        chunk = ids[start : start + 50]
        answer = region.call("athena", "BatchGetQueryExecution", QueryExecutionIds=chunk)
        for execution in answer.get("QueryExecutions", []):
            query_id = str(execution["QueryExecutionId"])
            state = str(execution.get("Status", {}).get("State"))
            memory.remember(query_id, state not in _ATHENA_RUNNING)
            into[query_id] = execution
            out.append(execution)
        for gone in answer.get("UnprocessedQueryExecutionIds", []):
            memory.remember(str(gone.get("QueryExecutionId")), True)
    return out


def _workgroup(region: _Region, workgroup: str, account: str | None) -> dict[str, Any]:
    """The workgroup's per-query byte cutoff and tags (cached for ``describe_ttl``)."""
    answer = region.call("athena", "GetWorkGroup", WorkGroup=workgroup)
    configuration = answer.get("WorkGroup", {}).get("Configuration", {})
    tags: dict[str, str] = {}
    if account:
        arn = f"arn:aws:athena:{region.region}:{account}:workgroup/{workgroup}"
        try:
            listed = region.call("athena", "ListTagsForResource", ResourceARN=arn)
            tags = {str(t["Key"]): str(t.get("Value", "")) for t in listed.get("Tags", [])}
        except SourceError:
            tags = {}  # tags only add protection; the kill switch re-reads before acting
    cutoff = configuration.get("BytesScannedCutoffPerQuery")
    return {"cutoff": int(cutoff) if cutoff else None, "tags": tags}


def _utc(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, tz=UTC)
    return None


def _athena_record(
    region: _Region,
    workgroup: str,
    execution: dict[str, Any],
    settings: dict[str, Any],
    prices: PriceTable,
    guard: GuardConfig,
    account: str | None,
    now: datetime,
) -> dict[str, Any]:
    status = execution.get("Status", {})
    scanned = int(execution.get("Statistics", {}).get("DataScannedInBytes") or 0)
    query = str(execution.get("Query") or "")
    start = _utc(status.get("SubmissionDateTime"))
    tags: dict[str, str] = settings["tags"]
    owner = region.source.athena_workgroup_owners.get(workgroup)
    for key in region.source.owner_tags:
        if tags.get(key):
            owner = tags[key]
            break
    record: dict[str, Any] = {
        "platform": "athena",
        "job_id": str(execution["QueryExecutionId"]),
        "provider": "aws",
        "sub_account_id": account,
        "region_id": region.region,
        "name": workgroup,
        "user": None,
        "owner": owner,
        "owner_source": "workgroup" if owner else None,
        "state": str(status.get("State")),
        "start_time": start,
        "end_time": None,
        "query_text": query[:8000] or None,
        "query_hash": hashlib.sha256(" ".join(query.split()).lower().encode()).hexdigest()[:16] if query else None,
        "billing_currency": "USD",
        "resource_id": str(execution["QueryExecutionId"]),
        "labels": dict(tags),
    }
    record.update(
        athena_costs(
            scanned,
            per_tb=prices.rate("athena:tb"),
            start=start,
            now=now,
            timeout=guard.athena_query_timeout,
            cutoff=settings["cutoff"],
        )
    )
    return record
