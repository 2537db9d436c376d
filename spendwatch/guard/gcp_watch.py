"""Running GCP work for the guard: ``gcp_jobs.list_running`` per platform, through rate-limited clients.

BigQuery: the lister's ``jobs.list`` (running + pending, all users, full projection) already carries
each job's statistics; the guard keeps those resources (``clients.BigQueryProxy``) and prices bytes
processed so far from them (``estimate.refine_bigquery``). Only a job whose list entry has no
progress yet *and* whose projection is near a cap (``describe_threshold``) is described with
``jobs.get`` — at most ``max_describes`` a poll. Vertex AI and Dataproc are list calls only.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from spendwatch.collectors.gcp.common import bigquery_client
from spendwatch.collectors.gcp.jobs import GcpJobsConfig, list_running, price_table, projects_for
from spendwatch.collectors.gcp.prices import PriceOverrides, PriceTable
from spendwatch.connections import gcp_credentials
from spendwatch.errors import ConfigError, SourceError
from spendwatch.gcp_rest import session_for
from spendwatch.guard.clients import BigQueryProxy, DataprocSessionProxy, VertexSessionProxy
from spendwatch.guard.config import GuardConfig
from spendwatch.guard.estimate import bigquery_stats, labels_of, refine_bigquery, scope_of
from spendwatch.guard.state import Listing, WatchState
from spendwatch.store import Store

log = logging.getLogger("spendwatch.guard")


class _Fixed:
    def __init__(self, now: datetime) -> None:
        self._now = now

    def now(self) -> datetime:
        return self._now


def merged_prices(source: PriceOverrides | None, guard: PriceOverrides | None) -> PriceOverrides | None:
    """The source's ``prices:`` with the guard's ``gcp_prices:`` on top (maps merge key by key)."""
    if guard is None:
        return source
    if source is None:
        return guard
    values: dict[str, Any] = source.model_dump(exclude_none=True)
    for key, value in guard.model_dump(exclude_none=True).items():
        values[key] = {**values.get(key, {}), **value} if isinstance(value, dict) else value
    return PriceOverrides.model_validate(values)


def _only(source: GcpJobsConfig, platform: str, projects: list[str], prices: PriceOverrides | None) -> GcpJobsConfig:
    return source.model_copy(
        update={
            "projects": projects,
            "prices": prices,
            "bigquery": source.bigquery.model_copy(update={"enabled": platform == "bigquery"}),
            "vertex": source.vertex.model_copy(update={"enabled": platform == "vertex"}),
            "dataproc": source.dataproc.model_copy(update={"enabled": platform == "dataproc"}),
        }
    )


def watch_gcp(
    source: GcpJobsConfig,
    guard: GuardConfig,
    state: WatchState,
    *,
    clients: dict[str, Any],
    now: datetime,
    store: Store | None,
    platforms: list[str],
) -> Listing:
    """Running jobs of the given platforms of one ``gcp-jobs`` source, in every project it covers."""
    listing = Listing()
    try:
        projects = projects_for(source, store)
    except ConfigError as exc:
        listing.problems.append(str(exc))
        listing.failed |= set(platforms)
        return listing
    overrides = merged_prices(source.prices, guard.gcp_prices)
    prices = _prices(source, overrides, state, store, now, guard)
    for platform in platforms:
        config = _only(source, platform, projects, overrides)
        try:
            if platform == "bigquery":
                records, describes = _bigquery(config, guard, state, clients, now, store, prices)
                listing.describes += describes
            elif platform == "vertex":
                records = _vertex(config, state, clients, now, store)
            else:
                records = _dataproc(config, state, clients, now, store)
        except (SourceError, ConfigError) as exc:
            listing.problems.append(f"{source.name} {platform}: {exc}")
            listing.failed.add(platform)
            continue
        except Exception as exc:
            if not _auth_error(exc):
                raise
            listing.problems.append(f"{source.name} {platform}: no usable Google credentials: {exc}")
            listing.failed.add(platform)
            continue
        listing.records.extend(records)
        listing.ok_scopes |= {scope_of("gcp", platform, None, project) for project in projects}
    return listing


def _prices(
    source: GcpJobsConfig,
    overrides: PriceOverrides | None,
    state: WatchState,
    store: Store | None,
    now: datetime,
    guard: GuardConfig,
) -> PriceTable:
    """The source's price table (its Catalog prices come from the store: read once per ``describe_ttl``)."""
    cached = state.prices.get(source.name)
    if cached is not None and now - cached[0] < guard.describe_ttl:
        found: PriceTable = cached[1]
        return found
    table = price_table(source.model_copy(update={"prices": overrides}), store)
    state.prices[source.name] = (now, table)
    return table


def _auth_error(exc: Exception) -> bool:
    from google.auth import exceptions

    return isinstance(exc, exceptions.GoogleAuthError)


def _rows(table: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = table.to_pylist()
    for row in rows:
        row["labels"] = labels_of(row.get("labels"))
    return rows


def _bigquery(
    config: GcpJobsConfig,
    guard: GuardConfig,
    state: WatchState,
    clients: dict[str, Any],
    now: datetime,
    store: Store | None,
    prices: PriceTable,
) -> tuple[list[dict[str, Any]], int]:
    proxy = BigQueryProxy(bigquery_client(config.gcp, clients), state.limiter)
    table = list_running(config, clients={**clients, "bigquery_client": proxy}, clock=_Fixed(now), store=store)
    records, describes = [], 0
    for row in _rows(table):
        project, _, rest = str(row["job_id"]).partition(":")
        location, _, bare = rest.partition(".")
        resource = proxy.resources.get((project, bare), {})
        stats = bigquery_stats(resource)
        if not stats.informative and describes < guard.max_describes and _near_a_cap(row, guard):
            try:
                proxy.get_job(bare, project=project, location=location or None)
            except Exception as exc:  # a failed describe leaves the list-level figures; the poll goes on
                log.warning("guard: jobs.get %s failed: %s", row["job_id"], exc)
            describes += 1
            stats = bigquery_stats(proxy.resources.get((project, bare), resource))
        if stats.state == "DONE":
            continue  # finished between the list and the describe
        settings = config.bigquery
        records.append(refine_bigquery(row, stats, prices, pricing=settings.pricing, edition=settings.edition, now=now))
    return records, describes


def _near_a_cap(row: dict[str, Any], guard: GuardConfig) -> bool:
    cap = guard.lowest_cap(row)
    projected = row.get("projected_cost") or row.get("estimated_cost")
    return cap is not None and projected is not None and float(projected) >= guard.describe_threshold * cap


def _vertex(
    config: GcpJobsConfig, state: WatchState, clients: dict[str, Any], now: datetime, store: Store | None
) -> list[dict[str, Any]]:
    session = clients.get("vertex_session")
    if session is None:
        from google.auth.transport.requests import AuthorizedSession

        session = AuthorizedSession(gcp_credentials(config.gcp))
    proxy = VertexSessionProxy(session, state.limiter)
    table = list_running(config, clients={**clients, "vertex_session": proxy}, clock=_Fixed(now), store=store)
    return _rows(table)


def _dataproc(
    config: GcpJobsConfig, state: WatchState, clients: dict[str, Any], now: datetime, store: Store | None
) -> list[dict[str, Any]]:
    session = clients.get("dataproc_session") or session_for(config.gcp)
    seams = {**clients, "dataproc_session": DataprocSessionProxy(session, state.limiter)}
    return _rows(list_running(config, clients=seams, clock=_Fixed(now), store=store))
