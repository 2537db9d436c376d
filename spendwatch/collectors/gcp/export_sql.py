"""The SQL spendwatch runs over a Cloud Billing export in BigQuery, built from the table's real schema.

Three export shapes are understood:

* ``standard`` — ``gcp_billing_export_v1_<ACCOUNT>``: cost per project × service × SKU × location.
* ``detailed`` — ``gcp_billing_export_resource_v1_<ACCOUNT>``: the same plus ``resource.name`` /
  ``resource.global_name`` (grouped by resource when ``include_resources`` is on).
* ``focus`` — ``gcp_billing_export_focus_<ACCOUNT>``: FOCUS columns (``BilledCost``,
  ``ChargePeriodStart`` …), mapped like any FOCUS file (``collectors/focus.py``).

Nothing from the config is ever pasted into the SQL except the table path, which is validated
(``gcp_common.check_table_path``) and backtick-quoted, and the partition column, which comes from
the table's own metadata and is validated as an identifier. Label keys, time bounds and the period
unit's companions are query parameters. Every query is partition-pruned: on the partition column
when the table has one, else on ``_PARTITIONTIME`` (ingestion-time partitioning, which the billing
exports use), widened by a day before the window (Pacific vs UTC day boundaries) and by
``late_rows`` after it (rows exported late land in later partitions).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from spendwatch.collectors.gcp.common import quote_table

ExportKind = Literal["standard", "detailed", "focus"]
Granularity = Literal["hour", "day"]

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,299}$")

# Columns (dotted paths into records) each export must have; a missing one means the export changed.
REQUIRED_COLUMNS: dict[ExportKind, tuple[str, ...]] = {
    "standard": (
        "billing_account_id",
        "service.id",
        "service.description",
        "sku.id",
        "sku.description",
        "usage_start_time",
        "project.id",
        "project.name",
        "labels.key",
        "labels.value",
        "location.region",
        "cost",
        "currency",
        "credits.amount",
        "cost_type",
    ),
    "detailed": (),  # + the standard columns, see required_columns()
    "focus": ("ChargePeriodStart", "BilledCost", "BillingCurrency", "ChargeCategory"),
}
_DETAILED_EXTRA = ("resource.name", "resource.global_name")
_FOCUS_OPTIONAL = (
    "BillingAccountId",
    "SubAccountId",
    "SubAccountName",
    "ServiceName",
    "ServiceCategory",
    "SkuId",
    "RegionId",
    "ChargeFrequency",
    "ChargeDescription",
    "ProviderName",
    "EffectiveCost",
    "ListCost",
)


def required_columns(kind: ExportKind) -> tuple[str, ...]:
    if kind == "detailed":
        return REQUIRED_COLUMNS["standard"] + _DETAILED_EXTRA
    return REQUIRED_COLUMNS[kind]


@dataclass(frozen=True)
class TableInfo:
    """What the table's metadata (tables.get) says: its columns and how it is partitioned."""

    columns: frozenset[str]
    column_types: dict[str, str]
    partition_column: str | None  # None with ``partitioned``: ingestion time (_PARTITIONTIME)
    partitioned: bool
    location: str | None = None

    @classmethod
    def from_table(cls, table: Any) -> TableInfo:
        columns: dict[str, str] = {}
        _flatten(table.schema, "", columns)
        partitioning = getattr(table, "time_partitioning", None)
        column = partitioning.field if partitioning is not None else None
        if column is not None and not _IDENTIFIER.match(column):
            raise ValueError(f"partition column {column!r} is not a plain identifier")
        return cls(
            columns=frozenset(columns),
            column_types=columns,
            partition_column=column,
            partitioned=partitioning is not None,
            location=getattr(table, "location", None),
        )


def _flatten(fields: Any, prefix: str, out: dict[str, str]) -> None:
    for schema_field in fields:
        name = f"{prefix}{schema_field.name}"
        out[name] = f"{schema_field.mode or 'NULLABLE'} {schema_field.field_type}"
        if schema_field.fields:
            _flatten(schema_field.fields, f"{name}.", out)


@dataclass(frozen=True)
class ExportQuery:
    """One aggregation query: its SQL and its parameters as (name, BigQuery type, value)."""

    sql: str
    parameters: list[tuple[str, str, Any]] = field(default_factory=list)

    def bigquery_parameters(self) -> list[Any]:
        from google.cloud import bigquery

        out: list[Any] = []
        for name, kind, value in self.parameters:
            if isinstance(value, list):
                out.append(bigquery.ArrayQueryParameter(name, kind, value))
            else:
                out.append(bigquery.ScalarQueryParameter(name, kind, value))
        return out


@dataclass(frozen=True)
class ExportQuerySpec:
    table: str
    kind: ExportKind
    granularity: Granularity
    label_keys: tuple[str, ...]
    project_label_keys: tuple[str, ...]
    include_resources: bool
    late_rows: timedelta


def build_query(spec: ExportQuerySpec, info: TableInfo, start: datetime, end: datetime) -> ExportQuery:
    """The aggregation of [start, end) in ``spec.granularity`` periods."""
    if spec.kind == "focus":
        return _focus_query(spec, info, start, end)
    return _billing_query(spec, info, start, end)


def _truncate(column: str, granularity: Granularity) -> str:
    # HOUR/DAY come from a closed Literal, never from user text.
    unit = {"hour": "HOUR", "day": "DAY"}[granularity]
    return f"TIMESTAMP_TRUNC({column}, {unit})"


def _partition_filter(
    info: TableInfo, spec: ExportQuerySpec, start: datetime, end: datetime
) -> tuple[str, list[tuple[str, str, Any]]]:
    low = start - timedelta(days=1)
    high = end + spec.late_rows
    if not info.partitioned:
        return "", []
    if info.partition_column is None:
        return (
            "_PARTITIONTIME >= @partition_start AND _PARTITIONTIME < @partition_end",
            [("partition_start", "TIMESTAMP", low), ("partition_end", "TIMESTAMP", high)],
        )
    column = info.partition_column
    kind = info.column_types.get(column, "NULLABLE TIMESTAMP").split()[-1]
    if kind == "DATE":
        values: tuple[Any, Any] = (low.date(), high.date())
    elif kind == "DATETIME":
        values = (low.replace(tzinfo=None), high.replace(tzinfo=None))
    else:
        kind = "TIMESTAMP"
        values = (low, high)
    return (
        f"`{column}` >= @partition_start AND `{column}` < @partition_end",
        [("partition_start", kind, values[0]), ("partition_end", kind, values[1])],
    )


def _label_columns(keys: tuple[str, ...], array: str, prefix: str) -> tuple[list[str], list[tuple[str, str, Any]]]:
    columns, params = [], []
    for index, key in enumerate(keys):
        name = f"{prefix}_{index}"
        columns.append(f"(SELECT l.value FROM UNNEST({array}) AS l WHERE l.key = @{name} LIMIT 1) AS {name}")
        params.append((name, "STRING", key))
    return columns, params


def _billing_query(spec: ExportQuerySpec, info: TableInfo, start: datetime, end: datetime) -> ExportQuery:
    dims = [
        f"{_truncate('usage_start_time', spec.granularity)} AS period_start",
        "billing_account_id",
        "project.id AS project_id",
        "project.name AS project_name",
        "service.id AS service_id",
        "service.description AS service_name",
        "sku.id AS sku_id",
        "sku.description AS sku_description",
        "COALESCE(location.region, location.location) AS region_id"
        if "location.location" in info.columns
        else "location.region AS region_id",
        "cost_type",
        "currency",
    ]
    if spec.kind == "detailed" and spec.include_resources:
        dims += ["resource.global_name AS resource_id", "resource.name AS resource_name"]
    label_cols, params = _label_columns(spec.label_keys, "labels", "label")
    project_cols, project_params = _label_columns(spec.project_label_keys, "project.labels", "project_label")
    dims += label_cols + project_cols
    measures = [
        "SUM(cost) AS cost",
        "SUM(IFNULL((SELECT SUM(c.amount) FROM UNNEST(credits) AS c), 0)) AS credits",
        "SUM(cost_at_list) AS list_cost" if "cost_at_list" in info.columns else "CAST(NULL AS FLOAT64) AS list_cost",
        "COUNT(*) AS source_rows",
    ]
    where, partition_params = _partition_filter(info, spec, start, end)
    conditions = [c for c in (where, "usage_start_time >= @start", "usage_start_time < @end") if c]
    group = ", ".join(str(i) for i in range(1, len(dims) + 1))
    sql = (
        "SELECT\n  "
        + ",\n  ".join(dims + measures)
        + f"\nFROM {quote_table(spec.table)}\nWHERE "
        + "\n  AND ".join(conditions)
        + f"\nGROUP BY {group}"
    )
    parameters = [("start", "TIMESTAMP", start), ("end", "TIMESTAMP", end), *partition_params, *params, *project_params]
    return ExportQuery(sql, parameters)


def _focus_query(spec: ExportQuerySpec, info: TableInfo, start: datetime, end: datetime) -> ExportQuery:
    def column(name: str, alias: str) -> str:
        return f"{name} AS {alias}" if name in info.columns else f"CAST(NULL AS STRING) AS {alias}"

    dims = [
        f"{_truncate('ChargePeriodStart', spec.granularity)} AS period_start",
        column("BillingAccountId", "billing_account_id"),
        column("SubAccountId", "project_id"),
        column("SubAccountName", "project_name"),
        column("ServiceName", "service_name"),
        column("ServiceCategory", "service_category"),
        column("SkuId", "sku_id"),
        column("ChargeDescription", "sku_description"),
        column("RegionId", "region_id"),
        "ChargeCategory AS charge_category",
        column("ChargeFrequency", "charge_frequency"),
        "BillingCurrency AS currency",
        column("ProviderName", "provider_name"),
    ]
    if spec.include_resources:
        dims += [column("ResourceId", "resource_id"), column("ResourceName", "resource_name")]
    params: list[tuple[str, str, Any]] = []
    if "Tags.key" in info.columns and "Tags.value" in info.columns:
        label_cols, params = _label_columns(spec.label_keys, "Tags", "label")
        dims += label_cols
    measures = [
        "SUM(BilledCost) AS billed_cost",
        "SUM(EffectiveCost) AS effective_cost"
        if "EffectiveCost" in info.columns
        else "SUM(BilledCost) AS effective_cost",
        "SUM(ListCost) AS list_cost" if "ListCost" in info.columns else "CAST(NULL AS FLOAT64) AS list_cost",
        "COUNT(*) AS source_rows",
    ]
    where, partition_params = _partition_filter(info, spec, start, end)
    conditions = [c for c in (where, "ChargePeriodStart >= @start", "ChargePeriodStart < @end") if c]
    group = ", ".join(str(i) for i in range(1, len(dims) + 1))
    sql = (
        "SELECT\n  "
        + ",\n  ".join(dims + measures)
        + f"\nFROM {quote_table(spec.table)}\nWHERE "
        + "\n  AND ".join(conditions)
        + f"\nGROUP BY {group}"
    )
    return ExportQuery(sql, [("start", "TIMESTAMP", start), ("end", "TIMESTAMP", end), *partition_params, *params])
