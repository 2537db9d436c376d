"""``gcp-jobs``: job-level usage on GCP — BigQuery jobs, Vertex AI custom jobs, Dataproc clusters and batches.

Each platform can be switched off on its own (``bigquery.enabled``, ``vertex.enabled``,
``dataproc.enabled``). Every run records recent *and currently running* work as job records
(``JOB_SCHEMA``) with an estimated cost so far and, where the platform has a limit, a projected cost
(what the job costs if it runs to its timeout/TTL), plus who owns it and how we know
(``owner_source``: ``label:<key>``, ``user_email``, ``creator``).

``list_running(config, clients=…, clock=…)`` is the cheap path a runaway-job guard polls: list APIs
only (BigQuery jobs.list, Vertex customJobs.list, Dataproc clusters/batches.list), no
INFORMATION_SCHEMA query, so it bills no BigQuery bytes. It returns a ``JOB_SCHEMA`` table of work in
a running state (``schema.JOB_STATES_RUNNING``).

Which projects: ``projects`` in the config, else every billing-enabled project the
``gcp-billing-accounts`` source recorded in the store (``gcp_projects``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field, field_validator

from spendwatch.clock import Clock, SystemClock
from spendwatch.collectors.base import SOURCES, Batch, CollectWindow, JobBatch, Problem, Source, SourceConfig
from spendwatch.collectors.gcp.common import RetrySettings, check_project_id, check_region
from spendwatch.collectors.gcp.prices import BUNDLED, PriceOverrides, PriceTable
from spendwatch.config_types import Duration
from spendwatch.connections import GcpConnection
from spendwatch.errors import ConfigError, SourceError
from spendwatch.plugins import StrictModel
from spendwatch.store import Store
from spendwatch.store.schema import JOB_SCHEMA, JOB_STATES_RUNNING

log = logging.getLogger("spendwatch.collect")


class BigQueryJobsSettings(StrictModel):
    enabled: bool = True
    scope: Literal["project", "organization"] = Field(
        default="project", description="INFORMATION_SCHEMA.JOBS_BY_PROJECT per project, or JOBS_BY_ORGANIZATION once"
    )
    organization_project: str | None = Field(
        default=None, description="with scope: organization, the project whose jobs read JOBS_BY_ORGANIZATION"
    )
    region: str = Field(default="us", description="INFORMATION_SCHEMA region qualifier: us, eu, us-central1 …")
    lookback: Duration = Field(
        default=timedelta(days=2), description="each run re-reads jobs created this far back (first run: backfill)"
    )
    query_text: Literal["none", "hash", "truncate", "full"] = Field(
        default="hash", description="keep no query text, only its SHA-256, the first query_text_chars, or all of it"
    )
    query_text_chars: int = Field(default=1000, ge=1, le=1_000_000)
    pricing: Literal["auto", "on-demand", "editions"] = Field(
        default="auto", description="auto: slot-hours for jobs that ran in a reservation, else bytes billed"
    )
    edition: Literal["standard", "enterprise", "enterprise_plus"] = "enterprise"
    maximum_bytes_billed: int = Field(default=10 << 30, ge=10 << 20)
    include_running: bool = Field(default=True, description="also list running jobs through jobs.list (all users)")

    @field_validator("organization_project")
    @classmethod
    def _project(cls, value: str | None) -> str | None:
        return None if value is None else check_project_id(value)

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        return check_region(value)


class VertexSettings(StrictModel):
    enabled: bool = True
    lookback: Duration = Field(default=timedelta(days=2), description="ended jobs are recorded this far back")


class DataprocSettings(StrictModel):
    enabled: bool = True
    clusters: bool = True
    batches: bool = True
    lookback: Duration = Field(default=timedelta(days=2), description="batches created this far back")


class GcpJobsConfig(SourceConfig):
    type: Literal["gcp-jobs"] = "gcp-jobs"
    every: Duration = Field(default=timedelta(minutes=15), description="how often the daemon collects")
    gcp: GcpConnection = Field(default_factory=GcpConnection)
    projects: list[str] = Field(
        default_factory=list, description="projects to read; empty: billing-enabled projects in the store"
    )
    regions: list[str] = Field(default_factory=lambda: ["us-central1"], description="Vertex AI and Dataproc regions")
    bigquery: BigQueryJobsSettings = Field(default_factory=BigQueryJobsSettings)
    vertex: VertexSettings = Field(default_factory=VertexSettings)
    dataproc: DataprocSettings = Field(default_factory=DataprocSettings)
    prices: PriceOverrides | None = None
    retry: RetrySettings = Field(default_factory=RetrySettings)
    page_size: int = Field(default=500, ge=10, le=1000)

    @field_validator("projects")
    @classmethod
    def _projects(cls, values: list[str]) -> list[str]:
        return [check_project_id(v) for v in values]

    @field_validator("regions")
    @classmethod
    def _regions(cls, values: list[str]) -> list[str]:
        if not values:
            raise ValueError("list at least one region")
        return [check_region(v) for v in values]


def price_table(config: GcpJobsConfig, store: Store | None) -> PriceTable:
    """Bundled prices, then Catalog prices cached by gcp-billing-accounts, then the config's."""
    table = BUNDLED
    if store is not None:
        from spendwatch.collectors.gcp.billing import cached_catalog_prices

        cached = cached_catalog_prices(store, config.regions[0])
        if cached is not None:
            table = table.merged(cached, source="bundled+catalog")
    return table.merged(config.prices)


def projects_for(config: GcpJobsConfig, store: Store | None) -> list[str]:
    if config.projects:
        return list(config.projects)
    if store is not None:
        from spendwatch.collectors.gcp.billing import billing_enabled_projects

        found = billing_enabled_projects(store)
        if found:
            return found
    raise ConfigError(
        f"source {config.name}: no projects to read: list them under 'projects:' or run a "
        "gcp-billing-accounts source first"
    )


# -- the source --------------------------------------------------------------------------------

Collector = Callable[..., Iterator[pa.Table | Problem]]


@SOURCES.register("gcp-jobs")
class GcpJobsSource(Source):
    config_model: ClassVar[type[SourceConfig]] = GcpJobsConfig
    config: GcpJobsConfig

    def collect(self, window: CollectWindow) -> Iterator[Batch]:
        from spendwatch.collectors.gcp import bigquery_jobs as gcp_bigquery_jobs
        from spendwatch.collectors.gcp import workloads as gcp_workloads

        config = self.config
        projects = projects_for(config, self.context.store)
        prices = price_table(config, self.context.store)
        first_run = self.context.store.get_state(self.name, "collected_once") is None
        parts: list[tuple[str, bool, Collector, timedelta]] = [
            ("bigquery", config.bigquery.enabled, gcp_bigquery_jobs.collect_bigquery, config.bigquery.lookback),
            ("vertex", config.vertex.enabled, gcp_workloads.collect_vertex, config.vertex.lookback),
            ("dataproc", config.dataproc.enabled, gcp_workloads.collect_dataproc, config.dataproc.lookback),
        ]
        failures = []
        for platform, enabled, collect, lookback in parts:
            if not enabled:
                continue
            since = window.since if first_run else max(window.since, window.until - lookback)
            try:
                for item in collect(config, self.context, projects, prices, since, window.until):
                    if isinstance(item, Problem):
                        yield item
                    elif item.num_rows:
                        yield JobBatch(item, label=f"{self.name} {platform}")
            except SourceError as exc:
                # One platform's failure (e.g. a missing permission) must not hide the others' jobs.
                failures.append(str(exc))
                yield Problem(f"{self.name} {platform}", str(exc))
        if failures and len(failures) == sum(1 for _, enabled, _, _ in parts if enabled):
            raise SourceError(failures[0])
        self.context.store.set_state(self.name, "collected_once", window.until.isoformat())


def list_running(
    config: GcpJobsConfig,
    *,
    clients: dict[str, Any] | None = None,
    clock: Clock | None = None,
    store: Store | None = None,
    logger: logging.Logger | None = None,
) -> pa.Table:
    """Every running BigQuery job, Vertex custom job, Dataproc cluster and batch, as JOB_SCHEMA rows.

    Costs are as of ``clock.now()``: ``estimated_cost`` so far, ``projected_cost`` to the job's
    timeout/TTL where it has one. List calls only — nothing is billed. Raises ``SourceError`` (one
    line naming permission and resource) when a platform cannot be listed.
    """
    from spendwatch.collectors.base import SourceContext
    from spendwatch.collectors.gcp import bigquery_jobs as gcp_bigquery_jobs
    from spendwatch.collectors.gcp import workloads as gcp_workloads

    clock = clock or SystemClock()
    context = SourceContext(
        clock=clock,
        store=store,  # type: ignore[arg-type]  # only read when present
        logger=logger or log,
        clients=clients or {},
    )
    projects = projects_for(config, store)
    prices = price_table(config, store)
    tables = []
    if config.bigquery.enabled:
        tables.append(gcp_bigquery_jobs.running_bigquery_jobs(config, context, projects, prices))
    if config.vertex.enabled:
        tables.append(gcp_workloads.running_vertex_jobs(config, context, projects, prices))
    if config.dataproc.enabled:
        tables.append(gcp_workloads.running_dataproc(config, context, projects, prices))
    table = pa.concat_tables(tables) if tables else JOB_SCHEMA.empty_table()
    running = [state in JOB_STATES_RUNNING for state in table.column("state").to_pylist()]
    return table.filter(pa.array(running, type=pa.bool_()))
