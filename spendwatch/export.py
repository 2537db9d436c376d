"""``costs export``: the store's cost lines written out as a FOCUS 1.0 dataset (Parquet or CSV).

Every column FOCUS 1.0 defines is written, in the specification's (alphabetical) order, whatever the
feature level: the 21 Mandatory ones, the Recommended and the Conditional. A column holds the
source's value where the source has it (the ``focus`` source keeps every FOCUS column) and NULL
where it does not — a Cost Explorer source has no BillingPeriodStart, a simulated one no
PricingQuantity; ``ExportResult.missing_mandatory`` counts such rows per Mandatory column, and the
CLI says so. spendwatch's own fields follow, in ``x_`` columns, as the specification asks.

The version is stated as FOCUS metadata (the specification's ``DataGenerator`` and ``Schema`` with
``FocusVersion``, ``SchemaId``, ``CreationDate`` and a ``ColumnDefinition`` per column): written
beside the file as ``<file>.metadata.json``, and for Parquet also in the file's key-value metadata
(``FocusVersion`` and the whole document under ``focus.metadata``).

Formats follow the specification's attributes: timestamps are UTC (Parquet TIMESTAMP; ISO 8601
``YYYY-MM-DDTHH:mm:ssZ`` in CSV), money and quantities are decimal numbers, ``Tags`` is a JSON object.

A CSV is opened in spreadsheets, and its text comes from tags and names anyone can write: a text
cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is written with a leading
``'`` (the OWASP advice against CSV injection), so a spreadsheet shows it as text instead of
evaluating it. Numbers and timestamps are written as they are; Parquet keeps every value unchanged.

The files are written beside their destination and renamed into place, so a failed export never
leaves a half-written file.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from spendwatch import __version__
from spendwatch.cli_util import check_output_file
from spendwatch.errors import InputError
from spendwatch.store import Store, Where

FOCUS_VERSION = "1.0"
PROVIDER_NAMES = {"aws": "AWS", "gcp": "Google Cloud", "azure": "Microsoft", "oci": "Oracle"}
# Tag keys the clouds write themselves (FOCUS metadata: ProviderTagPrefixes).
PROVIDER_TAG_PREFIXES = ["aws:", "goog-", "k8s-label/"]

DataType = Literal["STRING", "DECIMAL", "DATETIME", "JSON"]
Level = Literal["Mandatory", "Recommended", "Conditional"]


@dataclass(frozen=True)
class Column:
    """One exported column: its FOCUS id, the store column (or SQL) it comes from, type and level."""

    name: str
    source: str
    data_type: DataType = "STRING"
    level: Level = "Conditional"

    @property
    def custom(self) -> bool:
        return self.name.startswith("x_")


def _m(name: str, source: str, data_type: DataType = "STRING") -> Column:
    return Column(name, source, data_type, "Mandatory")


def _c(name: str, source: str, data_type: DataType = "STRING") -> Column:
    return Column(name, source, data_type, "Conditional")


# FOCUS 1.0 (FinOps Foundation, specification/columns at tag v1.0): every column, in its order.
FOCUS_COLUMNS: tuple[Column, ...] = (
    Column("AvailabilityZone", "availability_zone", level="Recommended"),
    _m("BilledCost", "billed_cost", "DECIMAL"),
    _m("BillingAccountId", "billing_account_id"),
    _m("BillingAccountName", "billing_account_name"),
    _m("BillingCurrency", "billing_currency"),
    _m("BillingPeriodEnd", "billing_period_end", "DATETIME"),
    _m("BillingPeriodStart", "billing_period_start", "DATETIME"),
    _m("ChargeCategory", "charge_category"),
    _m("ChargeClass", "charge_class"),
    _m("ChargeDescription", "charge_description"),
    Column("ChargeFrequency", "charge_frequency", level="Recommended"),
    _m("ChargePeriodEnd", "charge_period_end", "DATETIME"),
    _m("ChargePeriodStart", "charge_period_start", "DATETIME"),
    _c("CommitmentDiscountCategory", "commitment_discount_category"),
    _c("CommitmentDiscountId", "commitment_discount_id"),
    _c("CommitmentDiscountName", "commitment_discount_name"),
    _c("CommitmentDiscountStatus", "commitment_discount_status"),
    _c("CommitmentDiscountType", "commitment_discount_type"),
    _c("ConsumedQuantity", "consumed_quantity", "DECIMAL"),
    _c("ConsumedUnit", "consumed_unit"),
    _m("ContractedCost", "contracted_cost", "DECIMAL"),
    _c("ContractedUnitPrice", "contracted_unit_price", "DECIMAL"),
    _m("EffectiveCost", "effective_cost", "DECIMAL"),
    _m("InvoiceIssuerName", "invoice_issuer_name"),
    _m("ListCost", "list_cost", "DECIMAL"),
    _c("ListUnitPrice", "list_unit_price", "DECIMAL"),
    _c("PricingCategory", "pricing_category"),
    _m("PricingQuantity", "pricing_quantity", "DECIMAL"),
    _m("PricingUnit", "pricing_unit"),
    _m("ProviderName", "provider"),
    _m("PublisherName", "publisher_name"),
    _c("RegionId", "region_id"),
    _c("RegionName", "region_name"),
    _c("ResourceId", "resource_id"),
    _c("ResourceName", "resource_name"),
    _c("ResourceType", "resource_type"),
    _m("ServiceCategory", "service_category"),
    _m("ServiceName", "service_name"),
    _c("SkuId", "sku_id"),
    _c("SkuPriceId", "sku_price_id"),
    _c("SubAccountId", "sub_account_id"),
    _c("SubAccountName", "sub_account_name"),
    _c("Tags", "tags", "JSON"),
)
CUSTOM_COLUMNS: tuple[Column, ...] = (
    Column("x_Owner", "owner"),
    Column("x_JobId", "job_id"),
    Column("x_Source", "source"),
    Column("x_IsEstimated", "is_estimated"),
    Column("x_K8sCluster", "k8s_cluster"),
    Column("x_K8sNamespace", "k8s_namespace"),
    Column("x_K8sWorkload", "k8s_workload"),
)
# A Mandatory column that is NULL for a regular line: ChargeClass says only "Correction".
_NULL_BY_DESIGN = frozenset({"ChargeClass"})


@dataclass
class ExportResult:
    rows: int
    output: Path
    metadata_path: Path
    focus_version: str = FOCUS_VERSION
    # Mandatory FOCUS column → rows where it is NULL because the source did not have it.
    missing_mandatory: dict[str, int] = field(default_factory=dict)


def export_focus(
    store: Store,
    output: Path,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    provider: str | None = None,
) -> ExportResult:
    """Write matching cost lines to ``output`` (format from the suffix) and its FOCUS metadata beside it."""
    name = output.name.lower()
    if name.endswith(".parquet"):
        csv = False
    elif name.endswith(".csv"):
        csv = True
    else:
        raise InputError(f"{output}: the export format comes from the suffix; use .parquet or .csv")
    check_output_file(output, "--output")
    filters = Where().at_least("charge_period_start", since).before("charge_period_start", until)
    filters.equal("provider", provider)
    where, params = filters.sql, filters.params
    metadata_path = output.with_name(output.name + ".metadata.json")
    partial = output.with_name(f".{output.name}.partial-{os.getpid()}")
    partial_meta = metadata_path.with_name(f".{metadata_path.name}.partial-{os.getpid()}")
    try:
        with store.read() as con:
            rows, missing = _census(con, where, params)
            metadata = focus_metadata(store.clock.now(), rows, missing)
            document = json.dumps(metadata, indent=2)
            partial_meta.write_text(document + "\n", encoding="utf-8")
            quoted = str(partial).replace("'", "''")
            con.execute(f"COPY ({_select(csv, where)}) TO '{quoted}' ({_format(csv, document)})", params)
        partial_meta.replace(metadata_path)
        partial.replace(output)
    finally:
        partial.unlink(missing_ok=True)
        partial_meta.unlink(missing_ok=True)
    return ExportResult(rows, output, metadata_path, missing_mandatory=missing)


def _census(con: Any, where: str, params: list[Any]) -> tuple[int, dict[str, int]]:
    """The row count, and per Mandatory column the rows where the store has no value for it."""
    checked = [c for c in FOCUS_COLUMNS if c.level == "Mandatory" and c.name not in _NULL_BY_DESIGN]
    counts = ", ".join(f"count(*) FILTER (WHERE {c.source} IS NULL)" for c in checked)
    row = con.execute(f"SELECT count(*), {counts} FROM cost_lines {where}", params).fetchone()
    if row is None:
        return 0, {}
    return int(row[0]), {c.name: int(n) for c, n in zip(checked, row[1:], strict=True) if n}


def _select(csv: bool, where: str) -> str:
    columns = ", ".join(
        f'{_expression(column, csv)} AS "{column.name}"' for column in (*FOCUS_COLUMNS, *CUSTOM_COLUMNS)
    )
    return (
        f"SELECT {columns} FROM cost_lines {where} "
        "ORDER BY charge_period_start, provider, sub_account_id, service_name, sku_id, resource_id"
    )


def _format(csv: bool, metadata: str) -> str:
    if csv:
        return "FORMAT csv, HEADER true"
    quoted = metadata.replace("'", "''")
    kv = f"FocusVersion: '{FOCUS_VERSION}', \"focus.metadata\": '{quoted}'"
    return f"FORMAT parquet, COMPRESSION zstd, KV_METADATA {{{kv}}}"


def _expression(column: Column, csv: bool) -> str:
    source = column.source
    if column.name == "ProviderName":
        cases = " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in PROVIDER_NAMES.items())
        return f"CASE provider {cases} ELSE {_text('provider', csv)} END"
    if column.data_type == "JSON":
        return f"CASE WHEN {source} IS NULL THEN NULL ELSE to_json({source}) END"
    if column.data_type == "DATETIME":
        # FOCUS text files carry ISO 8601 UTC timestamps; Parquet keeps a real timestamp type.
        return f"strftime({source}, '%Y-%m-%dT%H:%M:%SZ')" if csv else source
    if column.data_type == "DECIMAL" or source == "is_estimated":
        return source
    return _text(source, csv)


def _text(column: str, csv: bool) -> str:
    """A text column; in a CSV, a value a spreadsheet would evaluate gets a leading ``'``."""
    if not csv:
        return column
    # chr(9) and chr(13): tab and carriage return; '''' is one quote in SQL.
    return (
        f"CASE WHEN left({column}, 1) IN ('=', '+', '-', '@', chr(9), chr(13)) THEN '''' || {column} ELSE {column} END"
    )


# -- metadata --------------------------------------------------------------------------------------------


def focus_metadata(now: datetime, rows: int, missing: dict[str, int]) -> dict[str, Any]:
    """The FOCUS 1.0 metadata of an export (DataGenerator, Schema), plus what this export holds."""
    definitions = [_definition(column) for column in (*FOCUS_COLUMNS, *CUSTOM_COLUMNS)]
    # The same columns always get the same SchemaId (the specification recommends a UUID).
    schema_id = uuid.uuid5(uuid.NAMESPACE_URL, "spendwatch:focus:" + json.dumps(definitions, sort_keys=True))
    return {
        "DataGenerator": f"spendwatch {__version__}",
        "Schema": {
            "SchemaId": str(schema_id),
            "FocusVersion": FOCUS_VERSION,
            "CreationDate": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "ColumnDefinition": definitions,
        },
        "x_Rows": rows,
        "x_MandatoryColumnsWithNulls": dict(sorted(missing.items())),
    }


def _definition(column: Column) -> dict[str, Any]:
    definition: dict[str, Any] = {"ColumnName": column.name, "DataType": column.data_type}
    if column.data_type == "STRING":
        definition["StringEncoding"] = "UTF-8"
    if column.data_type == "DECIMAL":
        definition["NumericPrecision"] = 16  # IEEE 754 binary64: FOCUS's "Double" precision
    if column.name == "Tags":
        definition["ProviderTagPrefixes"] = PROVIDER_TAG_PREFIXES
    if column.name == "x_IsEstimated":
        definition["DataType"] = "BOOLEAN"
    return definition
