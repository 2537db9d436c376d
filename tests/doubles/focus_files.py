"""FOCUS export files written the way clouds write them (CSV, CSV.gz, Parquet), for source tests."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

COLUMNS = [
    "BilledCost", "EffectiveCost", "ListCost", "BillingAccountId", "BillingCurrency", "ChargeCategory",
    "ChargeFrequency", "ChargePeriodStart", "ChargePeriodEnd", "ProviderName", "RegionId", "ResourceId",
    "ServiceCategory", "ServiceName", "SkuId", "SubAccountId", "SubAccountName", "Tags", "x_CustomField",
]  # fmt: skip


def focus_row(day: str, cost: float, **overrides: Any) -> dict[str, Any]:
    tags = overrides.pop("tags", {"owner": "ana@example.com", "job": "nightly-etl"})
    row = {
        "BilledCost": f"{cost:.10f}",
        "EffectiveCost": f"{cost:.10f}",
        "ListCost": f"{cost * 1.1:.10f}",
        "BillingAccountId": "999999999999",
        "BillingCurrency": "USD",
        "ChargeCategory": "Usage",
        "ChargeFrequency": "Usage-Based",
        "ChargePeriodStart": f"{day}T00:00:00Z",
        "ChargePeriodEnd": f"{day}T01:00:00Z",
        "ProviderName": "AWS",
        "RegionId": "us-east-1",
        "ResourceId": "i-0123456789",
        "ServiceCategory": "Compute",
        "ServiceName": "Amazon Elastic Compute Cloud",
        "SkuId": "SKU1",
        "SubAccountId": "111111111111",
        "SubAccountName": "research",
        "Tags": json.dumps(tags) if tags is not None else "NULL",
        "x_CustomField": "ignored",
    }
    row.update(overrides)
    return row


def month_rows(month: str, days: int, cost: float, **overrides: Any) -> list[dict[str, Any]]:
    return [focus_row(f"{month}-{d:02d}", cost, **overrides) for d in range(1, days + 1)]


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    names = columns or COLUMNS
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt", newline="") as handle:  # type: ignore[operator]
        writer = csv.DictWriter(handle, fieldnames=names, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Typed Parquet, as AWS Data Exports writes it: numbers as doubles, timestamps as timestamps."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows)
    for name in ("BilledCost", "EffectiveCost", "ListCost"):
        index = table.column_names.index(name)
        table = table.set_column(index, name, table.column(name).cast(pa.float64()))
    for name in ("ChargePeriodStart", "ChargePeriodEnd"):
        index = table.column_names.index(name)
        parsed = pa.array([s.replace("Z", "+00:00") for s in table.column(name).to_pylist()], pa.string()).cast(
            pa.timestamp("us", tz="UTC")
        )
        table = table.set_column(index, name, parsed)
    pq.write_table(table, path)
    return path
