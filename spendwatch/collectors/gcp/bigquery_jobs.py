"""BigQuery jobs with their users: INFORMATION_SCHEMA.JOBS for recent work, jobs.list for running work.

Recent jobs come from ``region-<r>.INFORMATION_SCHEMA.JOBS_BY_PROJECT`` (one query per project) or
``JOBS_BY_ORGANIZATION`` (one query in ``organization_project``), pruned on ``creation_time`` (the
views' partition column), capped by ``maximum_bytes_billed`` and counted like every query of ours.
Script parents are skipped (their child statements carry the bytes and slots). The query text never
crosses the wire unless asked for: BigQuery hashes it (``TO_HEX(SHA256(query))``) and cuts it to
``query_text_chars``.

Running jobs come from ``jobs.list(stateFilter=running|pending, allUsers=true)``: while a query runs
the API exposes its estimated bytes (the dry-run figure an on-demand job will bill) and slot-ms so
far. Estimated cost: on-demand bytes billed × $/TiB, or slot-hours × the edition's slot-hour price
for jobs that ran in a reservation (``pricing: auto``) or when told (``pricing: editions``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from spendwatch.collectors.base import Problem, SourceContext
from spendwatch.collectors.gcp.common import bigquery_client, call_google, make_retry
from spendwatch.collectors.gcp.export import run_query
from spendwatch.collectors.gcp.export_sql import ExportQuery
from spendwatch.collectors.gcp.prices import HOUR_MS, TIB, PriceTable
from spendwatch.collectors.job_records import jobs_table, owner_of

# BigQuery's own limit on a query's run time: the worst case a running slot-priced query can reach.
QUERY_TIME_LIMIT = timedelta(hours=6)


if TYPE_CHECKING:
    from spendwatch.collectors.gcp.jobs import GcpJobsConfig


def information_schema_query(config: GcpJobsConfig, project: str | None) -> ExportQuery:
    """The recent-jobs query for one project (or the organization when ``project`` is None)."""
    settings = config.bigquery
    region = f"region-{settings.region}"
    if project is None:
        view = f"`{region}`.INFORMATION_SCHEMA.JOBS_BY_ORGANIZATION"
        text = "CAST(NULL AS STRING) AS query_hash, CAST(NULL AS STRING) AS query_text"
    else:
        view = f"`{project}`.`{region}`.INFORMATION_SCHEMA.JOBS_BY_PROJECT"
        text = "TO_HEX(SHA256(query)) AS query_hash, SUBSTR(query, 1, @query_chars) AS query_text"
    sql = (
        "SELECT project_id, job_id, user_email, job_type, statement_type, state, creation_time, start_time,\n"
        "  end_time, total_bytes_processed, total_bytes_billed, total_slot_ms, reservation_id,\n"
        f"  error_result.reason AS error_reason, labels, {text}\n"
        f"FROM {view}\n"
        "WHERE creation_time >= @since AND creation_time < @until\n"
        "  AND job_type = 'QUERY'\n"
        "  AND (statement_type IS NULL OR statement_type != 'SCRIPT')"
    )
    chars = settings.query_text_chars if settings.query_text in ("truncate", "full") else 1
    if settings.query_text == "full":
        chars = 1_000_000
    return ExportQuery(sql, [("query_chars", "INT64", chars)])


def _cost(
    config: GcpJobsConfig, prices: PriceTable, bytes_billed: int | None, slot_ms: int | None, reservation: str | None
) -> tuple[float | None, str]:
    pricing = config.bigquery.pricing
    use_slots = pricing == "editions" or (pricing == "auto" and bool(reservation) and reservation != "default-pipeline")
    if use_slots:
        price = prices.slot_hour[config.bigquery.edition]
        if slot_ms is None:
            return None, "slot-hours × edition price (no slot-ms yet)"
        return slot_ms / HOUR_MS * price, f"slot-hours × {config.bigquery.edition} ${price}/slot-hour"
    if bytes_billed is None:
        return None, "on-demand bytes billed (not known yet)"
    price = prices.bigquery_on_demand_per_tib
    return bytes_billed / TIB * price, f"on-demand bytes billed × ${price}/TiB"


def _state(state: str | None, error: str | None) -> str:
    value = (state or "UNKNOWN").upper()
    if value == "DONE":
        return "FAILED" if error else "SUCCEEDED"
    return value


def _labels(raw: Any) -> dict[str, str]:
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    out = {}
    for item in raw or []:
        if isinstance(item, dict) and item.get("key") is not None:
            out[str(item["key"])] = str(item.get("value") or "")
    return out


def _text(config: GcpJobsConfig, text: str | None) -> str | None:
    return text if config.bigquery.query_text in ("truncate", "full") else None


def _hash(config: GcpJobsConfig, value: str | None) -> str | None:
    return None if config.bigquery.query_text == "none" else value


def collect_bigquery(
    config: GcpJobsConfig,
    context: SourceContext,
    projects: list[str],
    prices: PriceTable,
    since: datetime,
    until: datetime,
) -> Iterator[pa.Table | Problem]:
    """Recent jobs from INFORMATION_SCHEMA, then running jobs from jobs.list (which win for the same job)."""
    settings = config.bigquery
    client = bigquery_client(config.gcp, context.clients)
    org_client = client
    if settings.scope == "organization" and settings.organization_project:
        org_client = bigquery_client(
            config.gcp.model_copy(update={"project": settings.organization_project}), context.clients
        )
    targets: list[str | None] = [None] if settings.scope == "organization" else list(projects)
    records: dict[str, dict[str, Any]] = {}
    for project in targets:
        query = information_schema_query(config, project)
        query = ExportQuery(
            query.sql, [("since", "TIMESTAMP", since), ("until", "TIMESTAMP", until), *query.parameters]
        )
        where = f"INFORMATION_SCHEMA.JOBS_BY_{'ORGANIZATION' if project is None else 'PROJECT'}"
        resource = f"{where} of {project or settings.organization_project or config.gcp.project}"
        table = run_query(
            org_client if project is None else client,
            query,
            source=config.name,
            context=context,
            maximum_bytes_billed=settings.maximum_bytes_billed,
            retry=config.retry,
            page_size=10_000,
            location=settings.region.upper() if settings.region in ("us", "eu") else settings.region,
            purpose="bigquery-jobs",
            resource=resource,
        )
        for row in table.to_pylist():
            record = _record_from_information_schema(config, prices, row)
            records[record["job_id"]] = record
    if settings.include_running:
        for record in _running_records(config, context, projects, prices):
            records[record["job_id"]] = record
    yield jobs_table(list(records.values()))


def _record_from_information_schema(config: GcpJobsConfig, prices: PriceTable, row: dict[str, Any]) -> dict[str, Any]:
    labels = _labels(row.get("labels"))
    owner, owner_source = owner_of(labels, config.owner_tags, (row.get("user_email"), "user_email"))
    cost, method = _cost(
        config, prices, row.get("total_bytes_billed"), row.get("total_slot_ms"), row.get("reservation_id")
    )
    project = row["project_id"]
    location = config.bigquery.region
    return {
        "platform": "bigquery",
        "job_id": f"{project}:{location.upper() if location in ('us', 'eu') else location}.{row['job_id']}",
        "provider": "gcp",
        "sub_account_id": project,
        "region_id": location,
        "name": row.get("statement_type"),
        "user": row.get("user_email"),
        "owner": owner,
        "owner_source": owner_source,
        "state": _state(row.get("state"), row.get("error_reason")),
        "start_time": row.get("start_time") or row.get("creation_time"),
        "end_time": row.get("end_time"),
        "query_text": _text(config, row.get("query_text")),
        "query_hash": _hash(config, row.get("query_hash")),
        "bytes_processed": row.get("total_bytes_processed"),
        "bytes_billed": row.get("total_bytes_billed"),
        "slot_ms": row.get("total_slot_ms"),
        "estimated_cost": cost,
        "projected_cost": cost if row.get("end_time") else None,
        "cost_method": method,
        "billing_currency": prices.currency,
        "resource_id": f"projects/{project}/jobs/{row['job_id']}",
        "labels": labels,
    }


def running_bigquery_jobs(
    config: GcpJobsConfig, context: SourceContext, projects: list[str], prices: PriceTable
) -> pa.Table:
    return jobs_table(list(_running_records(config, context, projects, prices)))


def _running_records(
    config: GcpJobsConfig, context: SourceContext, projects: list[str], prices: PriceTable
) -> Iterator[dict[str, Any]]:
    client = bigquery_client(config.gcp, context.clients)
    retry = make_retry(config.retry)
    now = context.clock.now()
    for project in projects:
        for state in ("running", "pending"):

            def listing(project: str = project, state: str = state) -> list[Any]:
                return list(
                    client.list_jobs(
                        project=project,
                        state_filter=state,
                        all_users=True,
                        retry=retry,
                        page_size=config.page_size,
                        timeout=config.retry.call_seconds,
                    )
                )

            jobs = call_google(
                listing,
                source=config.name,
                doing=f"listing {state} BigQuery jobs",
                method="bigquery.jobs.list.all_users",
                resource=f"project {project}",
            )
            context.count("gcp_api_calls")
            for job in jobs:
                if getattr(job, "job_type", None) != "query":
                    continue
                yield _running_record(config, prices, job, now)


def _running_record(config: GcpJobsConfig, prices: PriceTable, job: Any, now: datetime) -> dict[str, Any]:
    labels = dict(job.labels or {})
    owner, owner_source = owner_of(labels, config.owner_tags, (job.user_email, "user_email"))
    estimated_bytes = getattr(job, "estimated_bytes_processed", None)
    slot_ms = getattr(job, "slot_millis", None)
    reservation = _reservation(job)
    text = job.query or ""
    use_slots = config.bigquery.pricing == "editions" or (config.bigquery.pricing == "auto" and reservation)
    if use_slots:
        so_far, method = _cost(config, prices, None, slot_ms, reservation or "assumed")
        started = job.started or job.created or now
        elapsed_ms = max((now - started).total_seconds() * 1000, 1.0)
        projected = None
        if so_far is not None:
            projected = so_far * (QUERY_TIME_LIMIT.total_seconds() * 1000) / elapsed_ms
            method += "; projected to BigQuery's 6 h query limit at the current slot rate"
    else:
        # On demand, a query bills its bytes when it finishes; the estimate is the dry-run figure.
        so_far, method = _cost(config, prices, estimated_bytes, None, None)
        projected = so_far
        method = "on-demand estimated bytes (dry-run figure) × $/TiB"
    state = (job.state or "RUNNING").upper()
    return {
        "platform": "bigquery",
        "job_id": f"{job.project}:{job.location}.{job.job_id}",
        "provider": "gcp",
        "sub_account_id": job.project,
        "region_id": (job.location or "").lower() or None,
        "name": getattr(job, "statement_type", None),
        "user": job.user_email,
        "owner": owner,
        "owner_source": owner_source,
        "state": state,
        "start_time": job.started or job.created,
        "query_text": _text(
            config, text[: config.bigquery.query_text_chars] if config.bigquery.query_text == "truncate" else text
        ),
        "query_hash": _hash(config, hashlib.sha256(text.encode()).hexdigest() if text else None),
        "bytes_processed": estimated_bytes,
        "slot_ms": slot_ms,
        "max_runtime_seconds": int(QUERY_TIME_LIMIT.total_seconds()),
        "estimated_cost": so_far,
        "projected_cost": projected,
        "cost_method": method,
        "billing_currency": prices.currency,
        "resource_id": f"projects/{job.project}/jobs/{job.job_id}",
        "labels": labels,
    }


def _reservation(job: Any) -> str | None:
    stats = (getattr(job, "_properties", {}) or {}).get("statistics", {})
    usage = stats.get("reservation_id") or stats.get("reservationId")
    if usage:
        return str(usage)
    entries = stats.get("reservationUsage") or []
    return str(entries[0].get("name")) if entries else None
