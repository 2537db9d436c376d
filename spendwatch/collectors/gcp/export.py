"""``gcp-billing-export``: GCP cost lines from the Cloud Billing export in BigQuery.

The export is the only place GCP's line items live. spendwatch never pulls the raw rows: each run
asks BigQuery for aggregates (per hour or day × billing account × project × service × SKU × region
× cost type × the configured label keys, and × resource for the detailed export) and stores those.

Why it cannot become the $40k query: every query is parameterised, partition-pruned (see
``gcp_export_sql``), runs with ``maximumBytesBilled`` (``maximum_bytes_billed``, default 50 GiB ≈
$0.31 on demand) so BigQuery refuses rather than bills a bigger scan, and its bytes billed are logged
and counted (``gcp_bigquery_bytes_billed``, exported as a metric by the daemon).

Late data: billing rows keep arriving (with a later ``export_time``) for days. Every run therefore
re-aggregates the last ``restatement`` (default 3 days) and replaces it; a first run (or one after a
pause) loads from the backfill start in calendar-month chunks. Each chunk is fetched completely and
checked before it is handed to the store, which replaces that period in one transaction, so a
failure mid-run leaves every period either fully old or fully new.

Money: ``cost`` is the usage line; ``SUM(credits.amount)`` (negative) becomes a separate line of
charge category ``Credit``, so net cost = cost + credits, and detection scores usage only.
``cost_type`` maps regular → Usage, tax → Tax, adjustment and rounding_error → Adjustment.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field, field_validator, model_validator

from spendwatch.collectors.base import SOURCES, Batch, CollectWindow, CostBatch, Source, SourceConfig
from spendwatch.collectors.focus import normalise_provider
from spendwatch.collectors.gcp.common import (
    RetrySettings,
    bigquery_client,
    call_google,
    check_region,
    check_table_path,
    make_retry,
)
from spendwatch.collectors.gcp.export_sql import (
    ExportKind,
    ExportQuery,
    ExportQuerySpec,
    Granularity,
    TableInfo,
    build_query,
    required_columns,
)
from spendwatch.collectors.k8s.costs import KubernetesLabels, label_tag
from spendwatch.collectors.tags import first_tag
from spendwatch.config_types import Duration
from spendwatch.connections import GcpConnection
from spendwatch.errors import MalformedAnswerError, SourceError
from spendwatch.store.schema import CHARGE_CATEGORIES, CHARGE_FREQUENCIES, COST_LINE_SCHEMA, TAGS_TYPE, conform

GIB = 1 << 30
DEFAULT_MAX_BYTES_BILLED = 50 * GIB
_LABEL_KEY = r"^[a-z][a-z0-9_-]{0,62}$"
_COST_TYPES = {"regular": "Usage", "tax": "Tax", "adjustment": "Adjustment", "rounding_error": "Adjustment"}
_FREQUENCY = {"Usage": "Usage-Based", "Credit": "Usage-Based", "Tax": "One-Time", "Adjustment": "One-Time"}
_CATEGORY = {c.lower(): c for c in CHARGE_CATEGORIES}
_FOCUS_FREQUENCY = {f.lower(): f for f in CHARGE_FREQUENCIES}
# FOCUS ServiceCategory for the services that matter most; the rest are "Other".
SERVICE_CATEGORIES = {
    "Compute Engine": "Compute",
    "Kubernetes Engine": "Compute",
    "Cloud Run": "Compute",
    "Cloud Run Functions": "Compute",
    "Cloud Functions": "Compute",
    "App Engine": "Compute",
    "Batch": "Compute",
    "BigQuery": "Analytics",
    "BigQuery Reservation API": "Analytics",
    "BigQuery Storage API": "Analytics",
    "Dataproc": "Analytics",
    "Dataflow": "Analytics",
    "Pub/Sub": "Integration",
    "Cloud Composer": "Integration",
    "Vertex AI": "AI and Machine Learning",
    "Gemini API": "AI and Machine Learning",
    "Cloud TPU": "AI and Machine Learning",
    "Cloud Storage": "Storage",
    "Filestore": "Storage",
    "Artifact Registry": "Storage",
    "Cloud SQL": "Databases",
    "Cloud Spanner": "Databases",
    "Cloud Bigtable": "Databases",
    "Firestore": "Databases",
    "Memorystore for Redis": "Databases",
    "Networking": "Networking",
    "Cloud DNS": "Networking",
    "Cloud CDN": "Networking",
    "Cloud Logging": "Management and Governance",
    "Cloud Monitoring": "Management and Governance",
    "Secret Manager": "Security",
    "Cloud Key Management Service (KMS)": "Security",
    "Support": "Other",
}


class GcpBillingExportConfig(SourceConfig):
    type: Literal["gcp-billing-export"] = "gcp-billing-export"
    gcp: GcpConnection = Field(default_factory=GcpConnection)
    table: str = Field(
        description="the export table 'project.dataset.table' (gcp_billing_export_v1_…, _resource_v1_…, _focus_…)"
    )
    export: ExportKind | None = Field(
        default=None, description="standard | detailed | focus; default: from the table name"
    )
    location: str | None = Field(default=None, description="the dataset's location (US, EU, europe-west1 …)")
    granularity: Granularity = Field(default="hour", description="hour or day periods")
    label_keys: list[str] = Field(
        default_factory=lambda: ["owner", "team", "job", "goog-dataproc-cluster-name", "goog-dataproc-batch-id"],
        description="resource label keys kept as tags (each one multiplies the rows returned)",
    )
    project_label_keys: list[str] = Field(
        default_factory=list, description="project label keys kept as tags named 'project:<key>'"
    )
    kubernetes: KubernetesLabels | None = Field(
        default=None,
        description="GKE cost allocation: cluster, namespace, workload, owner from k8s labels (docs/kubernetes.md)",
    )
    include_resources: bool = Field(default=True, description="group by resource (detailed and FOCUS exports)")
    restatement: Duration = Field(default=timedelta(days=3), description="re-aggregated and replaced every run")
    late_rows: Duration = Field(
        default=timedelta(days=10), description="how long after a period its rows may still be exported"
    )
    maximum_bytes_billed: int = Field(
        default=DEFAULT_MAX_BYTES_BILLED,
        ge=10 * (1 << 20),
        description="BigQuery refuses any query of ours that would bill more bytes than this",
    )
    page_size: int = Field(default=50_000, ge=100, le=100_000, description="rows per getQueryResults page")
    retry: RetrySettings = Field(default_factory=RetrySettings)

    @field_validator("table")
    @classmethod
    def _table(cls, value: str) -> str:
        return check_table_path(value)

    @field_validator("location")
    @classmethod
    def _location(cls, value: str | None) -> str | None:
        return None if value is None else check_region(value)

    @field_validator("label_keys", "project_label_keys")
    @classmethod
    def _label_keys(cls, keys: list[str]) -> list[str]:
        import re

        for key in keys:
            if not re.match(_LABEL_KEY, key):
                raise ValueError(f"{key!r} is not a GCP label key (lowercase letters, digits, _ and -; ≤ 63)")
        if len(set(keys)) != len(keys):
            raise ValueError("a label key is listed twice")
        if len(keys) > 20:
            raise ValueError("at most 20 label keys (each one multiplies the rows BigQuery returns)")
        return keys

    @model_validator(mode="after")
    def _kind(self) -> GcpBillingExportConfig:
        if self.export is None:
            object.__setattr__(self, "export", export_kind_from_name(self.table))
        return self

    @property
    def kind(self) -> ExportKind:
        assert self.export is not None
        return self.export

    def all_label_keys(self) -> list[str]:
        """``label_keys`` and, with ``kubernetes:``, the labels GKE cost allocation adds to a pod's rows."""
        keys = list(self.label_keys)
        if self.kubernetes is not None and self.kubernetes.enabled:
            k8s = self.kubernetes
            keys += [*GKE_LABELS, *(label_tag(k) for k in [*k8s.workload_labels, *k8s.stored_labels()])]
        return list(dict.fromkeys(keys))


# The labels GKE cost allocation puts on the billing rows of a cluster's pods (besides k8s-label/<key>).
GKE_CLUSTER_LABEL = "goog-k8s-cluster-name"
GKE_NAMESPACE_LABEL = "k8s-namespace"
GKE_LABELS = (GKE_CLUSTER_LABEL, GKE_NAMESPACE_LABEL, "goog-k8s-cluster-location", "goog-k8s-node-pool-name")


def k8s_fields(tags: list[tuple[str, str]], config: GcpBillingExportConfig) -> dict[str, Any]:
    """Cluster, namespace, workload and (from the workload's labels) owner of one row, if it is a pod's."""
    settings = config.kubernetes
    lookup = dict(tags)
    namespace = lookup.get(GKE_NAMESPACE_LABEL)
    if settings is None or not settings.enabled or not namespace:
        return {}
    workload = next((lookup[label_tag(k)] for k in settings.workload_labels if lookup.get(label_tag(k))), None)
    owner = next((lookup[label_tag(k)] for k in settings.owner_labels if lookup.get(label_tag(k))), None)
    fields = {"k8s_cluster": lookup.get(GKE_CLUSTER_LABEL), "k8s_namespace": namespace, "k8s_workload": workload}
    return {**fields, "owner": owner} if owner else fields


def export_kind_from_name(table: str) -> ExportKind:
    name = table.rsplit(".", 1)[-1].lower()
    if name.startswith("gcp_billing_export_resource_v1"):
        return "detailed"
    if name.startswith("gcp_billing_export_focus") or "focus" in name:
        return "focus"
    if name.startswith("gcp_billing_export_v1"):
        return "standard"
    raise ValueError(
        f"cannot tell the export kind from the table name {name!r}; set export: standard | detailed | focus"
    )


def _floor(moment: datetime, granularity: Granularity) -> datetime:
    moment = moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if granularity == "day" else moment


def _next_month(moment: datetime) -> datetime:
    return datetime(moment.year + (moment.month == 12), moment.month % 12 + 1, 1, tzinfo=UTC)


def month_chunks(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """[start, end) cut at calendar-month boundaries (UTC)."""
    chunks = []
    cursor = start
    while cursor < end:
        boundary = min(_next_month(cursor), end)
        chunks.append((cursor, boundary))
        cursor = boundary
    return chunks


@SOURCES.register("gcp-billing-export")
class GcpBillingExportSource(Source):
    config_model: ClassVar[type[SourceConfig]] = GcpBillingExportConfig
    config: GcpBillingExportConfig

    def collect(self, window: CollectWindow) -> Iterator[Batch]:
        config = self.config
        client = bigquery_client(config.gcp, self.context.clients, location=config.location)
        info = self._table_info(client)
        end = _floor(window.until, config.granularity) + (
            timedelta(days=1) if config.granularity == "day" else timedelta(hours=1)
        )
        start = self._start(window, end)
        chunks = month_chunks(start, end)
        self.context.progress(
            f"{self.name}: aggregating {config.table} from {start:%Y-%m-%d}, {len(chunks)} query(ies)"
        )
        for chunk_start, chunk_end in chunks:
            lines = self._aggregate(client, info, chunk_start, chunk_end)
            yield CostBatch(
                chunk_start, chunk_end, lines, label=f"{self.name} {chunk_start:%Y-%m-%d}..{chunk_end:%Y-%m-%d}"
            )
            # Written by the runner before the generator resumes: safe to advance the cursor now.
            self.context.store.set_state(self.name, "loaded_until", chunk_end.isoformat())

    def _start(self, window: CollectWindow, end: datetime) -> datetime:
        restate_from = _floor(end - self.config.restatement, "day")
        loaded = self.context.store.get_state(self.name, "loaded_until")
        if loaded is None:
            return min(_floor(window.since, "day"), restate_from)
        return min(datetime.fromisoformat(loaded).astimezone(UTC), restate_from)

    # -- BigQuery -------------------------------------------------------------------------------

    def _table_info(self, client: Any) -> TableInfo:
        table_path = self.config.table
        table = call_google(
            lambda: client.get_table(
                table_path, retry=make_retry(self.config.retry), timeout=self.config.retry.call_seconds
            ),
            source=self.name,
            doing="reading the billing export table's schema",
            method="bigquery.tables.get",
            resource=f"table {table_path}",
        )
        self.context.count("gcp_api_calls")
        info = TableInfo.from_table(table)
        missing = [c for c in required_columns(self.config.kind) if c not in info.columns]
        if missing:
            raise SourceError(
                f"source {self.name}: table {table_path} does not look like a {self.config.kind} billing export "
                f"(missing column(s): {', '.join(missing)}); check 'table' and 'export'"
            )
        if not info.partitioned:
            self.context.logger.warning(
                "source %s: table %s is not partitioned: every query scans the whole table "
                "(maximum_bytes_billed still caps it)",
                self.name,
                table_path,
            )
        return info

    def spec(self) -> ExportQuerySpec:
        config = self.config
        return ExportQuerySpec(
            table=config.table,
            kind=config.kind,
            granularity=config.granularity,
            label_keys=tuple(config.all_label_keys()),
            project_label_keys=tuple(config.project_label_keys),
            include_resources=config.include_resources,
            late_rows=config.late_rows,
        )

    def _aggregate(self, client: Any, info: TableInfo, start: datetime, end: datetime) -> pa.Table:
        query = build_query(self.spec(), info, start, end)
        result = run_query(
            client,
            query,
            source=self.name,
            context=self.context,
            maximum_bytes_billed=self.config.maximum_bytes_billed,
            retry=self.config.retry,
            page_size=self.config.page_size,
            location=self.config.location,
            purpose="billing-export",
            resource=f"table {self.config.table}",
        )
        try:
            if self.config.kind == "focus":
                lines = focus_rows_to_lines(result, self.config)
            else:
                lines = export_rows_to_lines(result, self.config)
        except (KeyError, ValueError, pa.ArrowInvalid) as exc:
            raise MalformedAnswerError(
                f"source {self.name}: BigQuery answered rows spendwatch cannot read for "
                f"{start:%Y-%m-%d}..{end:%Y-%m-%d}: {exc}"
            ) from None
        return lines


def run_query(
    client: Any,
    query: ExportQuery,
    *,
    source: str,
    context: Any,
    maximum_bytes_billed: int,
    retry: RetrySettings,
    page_size: int,
    location: str | None,
    purpose: str,
    resource: str,
) -> pa.Table:
    """Run one capped, labelled query to completion and return every row as Arrow."""
    from google.cloud import bigquery

    job_config = bigquery.QueryJobConfig(
        query_parameters=query.bigquery_parameters(),
        maximum_bytes_billed=maximum_bytes_billed,
        use_legacy_sql=False,
        labels={"spendwatch": purpose, "spendwatch-source": _label_value(source)},
    )
    api_retry = make_retry(retry)
    began = time.monotonic()

    def execute() -> tuple[Any, pa.Table]:
        # No job_retry: with one, the client re-inserts a failing query job for up to 10 minutes whatever
        # our deadline says (a 5xx fault hung a collection that long). Calls still retry within ``retry``;
        # the next run retries the rest.
        job = client.query(
            query.sql,
            job_config=job_config,
            location=location,
            retry=api_retry,
            timeout=retry.call_seconds,
            job_retry=None,
        )
        rows = job.result(page_size=page_size, retry=api_retry, timeout=retry.deadline.total_seconds(), job_retry=None)
        return job, rows.to_arrow(create_bqstorage_client=False, progress_bar_type=None)

    try:
        job, table = call_google(
            execute,
            source=source,
            doing=f"running the {purpose} query",
            method="bigquery.query",
            resource=resource,
        )
    except SourceError as exc:
        if "bytesBilledLimitExceeded" in str(exc) or "limit for bytes billed" in str(exc):
            raise SourceError(
                f"source {source}: BigQuery refused the {purpose} query because it would bill more than "
                f"maximum_bytes_billed ({maximum_bytes_billed:,} bytes); raise 'maximum_bytes_billed' or shorten "
                f"'backfill' / 'restatement'"
            ) from None
        raise
    billed = int(getattr(job, "total_bytes_billed", None) or 0)
    processed = int(getattr(job, "total_bytes_processed", None) or 0)
    context.count("gcp_bigquery_queries")
    context.count("gcp_bigquery_bytes_billed", billed)
    context.count("gcp_bigquery_bytes_processed", processed)
    context.logger.info(
        "source %s: %s query %s billed %d bytes (processed %d) and returned %d rows in %.1fs",
        source,
        purpose,
        getattr(job, "job_id", "?"),
        billed,
        processed,
        table.num_rows,
        time.monotonic() - began,
    )
    return table


def _label_value(text: str) -> str:
    cleaned = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in text.lower())
    return cleaned[:63] or "unnamed"


# -- rows → cost lines ------------------------------------------------------------------------


def _column(table: pa.Table, name: str) -> list[Any]:
    if name not in table.column_names:
        return [None] * table.num_rows
    values: list[Any] = table.column(name).to_pylist()
    return values


def _tags(table: pa.Table, config: GcpBillingExportConfig) -> list[list[tuple[str, str]]]:
    rows: list[list[tuple[str, str]]] = [[] for _ in range(table.num_rows)]
    for index, key in enumerate(config.all_label_keys()):
        for row, value in zip(rows, _column(table, f"label_{index}"), strict=True):
            if value is not None:
                row.append((key, str(value)))
    for index, key in enumerate(config.project_label_keys):
        for row, value in zip(rows, _column(table, f"project_label_{index}"), strict=True):
            if value is not None:
                row.append((f"project:{key}", str(value)))
    return rows


def _period_end(start: datetime, granularity: Granularity) -> datetime:
    return start + (timedelta(days=1) if granularity == "day" else timedelta(hours=1))


def export_rows_to_lines(result: pa.Table, config: GcpBillingExportConfig) -> pa.Table:
    """Standard/detailed aggregates → cost lines: one Usage/Tax/Adjustment line, plus a Credit line."""
    tags = _tags(result, config)
    cols = {name: _column(result, name) for name in result.column_names}
    out: dict[str, list[Any]] = {field.name: [] for field in COST_LINE_SCHEMA}
    for i in range(result.num_rows):
        start = cols["period_start"][i]
        if start is None:
            raise ValueError("a row has no usage_start_time")
        cost_type = (cols["cost_type"][i] or "regular").lower()
        category = _COST_TYPES.get(cost_type, "Adjustment")
        currency = cols["currency"][i]
        if not currency:
            raise ValueError(f"a row of {start:%Y-%m-%d %H:%M} has no currency")
        base = {
            "provider": "gcp",
            "billing_account_id": cols["billing_account_id"][i],
            "sub_account_id": cols["project_id"][i],
            "sub_account_name": cols["project_name"][i],
            "service_name": cols["service_name"][i],
            "service_category": SERVICE_CATEGORIES.get(cols["service_name"][i] or "", "Other"),
            "sku_id": cols["sku_id"][i],
            "region_id": cols["region_id"][i],
            "resource_id": cols.get("resource_id", [None] * result.num_rows)[i],
            "resource_name": cols.get("resource_name", [None] * result.num_rows)[i],
            "charge_period_start": start,
            "charge_period_end": _period_end(start, config.granularity),
            "billing_currency": currency,
            "tags": tags[i] or None,
            "owner": first_tag(tags[i], config.owner_tags),
            "job_id": first_tag(tags[i], config.job_tags),
            "is_estimated": False,
            **k8s_fields(tags[i], config),
        }
        cost = float(cols["cost"][i] or 0.0)
        credits = float(cols["credits"][i] or 0.0)
        _append(out, base, category, _FREQUENCY[category], cols["sku_description"][i], cost, cols["list_cost"][i])
        if credits != 0.0:
            _append(out, base, "Credit", "Usage-Based", f"Credits: {cols['sku_description'][i] or ''}", credits, None)
    return conform(_to_table(out), COST_LINE_SCHEMA)


def _append(
    out: dict[str, list[Any]],
    base: dict[str, Any],
    category: str,
    frequency: str,
    description: str | None,
    amount: float,
    list_cost: Any,
) -> None:
    row = dict(base)
    row.update(
        charge_category=category,
        charge_frequency=frequency,
        charge_description=description,
        billed_cost=amount,
        effective_cost=amount,
        list_cost=None if list_cost is None else float(list_cost),
    )
    for name, values in out.items():
        values.append(row.get(name))


def _to_table(out: dict[str, list[Any]]) -> pa.Table:
    arrays = {}
    for schema_field in COST_LINE_SCHEMA:
        values = out[schema_field.name]
        arrays[schema_field.name] = pa.array(
            values, type=TAGS_TYPE if schema_field.name == "tags" else schema_field.type
        )
    return pa.table(arrays)


def focus_rows_to_lines(result: pa.Table, config: GcpBillingExportConfig) -> pa.Table:
    """FOCUS aggregates → cost lines, categories and frequencies normalised as for FOCUS files."""
    tags = _tags(result, config)
    cols = {name: _column(result, name) for name in result.column_names}
    out: dict[str, list[Any]] = {field.name: [] for field in COST_LINE_SCHEMA}
    for i in range(result.num_rows):
        start = cols["period_start"][i]
        raw_category = cols["charge_category"][i] or ""
        category = _CATEGORY.get(raw_category.strip().lower())
        if category is None:
            raise ValueError(f"ChargeCategory {raw_category!r} is not one of {', '.join(CHARGE_CATEGORIES)}")
        frequency = _FOCUS_FREQUENCY.get((cols["charge_frequency"][i] or "").strip().lower())
        currency = cols["currency"][i]
        if start is None or not currency:
            raise ValueError("a row has no ChargePeriodStart or BillingCurrency")
        billed = float(cols["billed_cost"][i] or 0.0)
        effective = cols["effective_cost"][i]
        row = {
            "provider": normalise_provider(cols["provider_name"][i] or "Google Cloud"),
            "billing_account_id": cols["billing_account_id"][i],
            "sub_account_id": cols["project_id"][i],
            "sub_account_name": cols["project_name"][i],
            "service_name": cols["service_name"][i],
            "service_category": cols["service_category"][i]
            or SERVICE_CATEGORIES.get(cols["service_name"][i] or "", "Other"),
            "sku_id": cols["sku_id"][i],
            "region_id": cols["region_id"][i],
            "resource_id": cols.get("resource_id", [None] * result.num_rows)[i],
            "resource_name": cols.get("resource_name", [None] * result.num_rows)[i],
            "charge_category": category,
            "charge_frequency": frequency,
            "charge_description": cols["sku_description"][i],
            "charge_period_start": start,
            "charge_period_end": _period_end(start, config.granularity),
            "billed_cost": billed,
            "effective_cost": billed if effective is None else float(effective),
            "list_cost": None if cols["list_cost"][i] is None else float(cols["list_cost"][i]),
            "billing_currency": currency,
            "tags": tags[i] or None,
            "owner": first_tag(tags[i], config.owner_tags),
            "job_id": first_tag(tags[i], config.job_tags),
            "is_estimated": False,
            **k8s_fields(tags[i], config),
        }
        for name, values in out.items():
            values.append(row.get(name))
    return conform(_to_table(out), COST_LINE_SCHEMA)
