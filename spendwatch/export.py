"""``costs export``: the store's cost lines written back out as a FOCUS file (Parquet or CSV).

Columns carry their FOCUS names; spendwatch's own derived fields go in ``x_`` extension columns, as
the specification allows. The file is written beside its destination and renamed into place, so a
failed export never leaves a half-written file.

A CSV is opened in spreadsheets, and its text comes from tags and names anyone can write: a text
cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is written with a leading
``'`` (the OWASP advice against CSV injection), so a spreadsheet shows it as text instead of
evaluating it. Numbers and timestamps are written as they are; Parquet keeps every value unchanged.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from spendwatch.cli_util import check_output_file
from spendwatch.errors import InputError
from spendwatch.store import Store, Where

PROVIDER_NAMES = {"aws": "AWS", "gcp": "Google Cloud", "azure": "Microsoft", "oci": "Oracle"}

FOCUS_COLUMNS: list[tuple[str, str]] = [
    ("BillingAccountId", "billing_account_id"),
    ("SubAccountId", "sub_account_id"),
    ("SubAccountName", "sub_account_name"),
    ("ServiceName", "service_name"),
    ("ServiceCategory", "service_category"),
    ("SkuId", "sku_id"),
    ("RegionId", "region_id"),
    ("ResourceId", "resource_id"),
    ("ResourceName", "resource_name"),
    ("ChargeCategory", "charge_category"),
    ("ChargeFrequency", "charge_frequency"),
    ("ChargeDescription", "charge_description"),
    ("ChargePeriodStart", "charge_period_start"),
    ("ChargePeriodEnd", "charge_period_end"),
    ("BilledCost", "billed_cost"),
    ("EffectiveCost", "effective_cost"),
    ("ListCost", "list_cost"),
    ("BillingCurrency", "billing_currency"),
    ("x_Owner", "owner"),
    ("x_JobId", "job_id"),
    ("x_Source", "source"),
    ("x_K8sCluster", "k8s_cluster"),
    ("x_K8sNamespace", "k8s_namespace"),
    ("x_K8sWorkload", "k8s_workload"),
]


def export_focus(
    store: Store,
    output: Path,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    provider: str | None = None,
) -> int:
    """Write matching cost lines to ``output`` (format from the suffix); returns the row count."""
    suffix = output.name.lower()
    if suffix.endswith(".parquet"):
        fmt = "FORMAT parquet, COMPRESSION zstd"
    elif suffix.endswith(".csv"):
        fmt = "FORMAT csv, HEADER true"
    else:
        raise InputError(f"{output}: the export format comes from the suffix; use .parquet or .csv")
    check_output_file(output, "--output")
    provider_case = " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in PROVIDER_NAMES.items())
    csv = fmt.startswith("FORMAT csv")
    select = ", ".join(f'{_column(column, csv)} AS "{name}"' for name, column in FOCUS_COLUMNS)
    provider_name = f"CASE provider {provider_case} ELSE {_text('provider', csv)} END"
    filters = Where().at_least("charge_period_start", since).before("charge_period_start", until)
    filters.equal("provider", provider)
    where, params = filters.sql, filters.params
    sql = (
        f'SELECT {provider_name} AS "ProviderName", {select}, '
        f'CASE WHEN tags IS NULL THEN NULL ELSE to_json(tags) END AS "Tags" '
        f"FROM cost_lines {where} ORDER BY charge_period_start, provider, sub_account_id, service_name"
    )
    partial = output.with_name(f".{output.name}.partial-{os.getpid()}")
    try:
        with store.read() as con:
            count_row = con.execute(f"SELECT count(*) FROM cost_lines {where}", params).fetchone()
            quoted = str(partial).replace("'", "''")
            con.execute(f"COPY ({sql}) TO '{quoted}' ({fmt})", params)
        partial.replace(output)
    finally:
        partial.unlink(missing_ok=True)
    return int(count_row[0]) if count_row else 0


_NUMERIC = frozenset({"billed_cost", "effective_cost", "list_cost"})


def _column(column: str, csv: bool) -> str:
    # FOCUS text files carry ISO 8601 UTC timestamps; Parquet keeps a real timestamp type.
    if csv and column.startswith("charge_period_"):
        return f"strftime({column}, '%Y-%m-%dT%H:%M:%SZ')"
    if column in _NUMERIC:
        return column
    return _text(column, csv)


def _text(column: str, csv: bool) -> str:
    """A text column; in a CSV, a value a spreadsheet would evaluate gets a leading ``'``."""
    if not csv:
        return column
    # chr(9) and chr(13): tab and carriage return; '''' is one quote in SQL.
    return (
        f"CASE WHEN left({column}, 1) IN ('=', '+', '-', '@', chr(9), chr(13)) "
        f"THEN '''' || {column} ELSE {column} END"
    )
