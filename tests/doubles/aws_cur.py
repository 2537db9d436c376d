"""CUR 2.0 / legacy CUR export files and manifests, generated for tests, laid out as AWS delivers them."""

from __future__ import annotations

import csv
import gzip
import io
import json
import uuid
import zlib
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

CUR2_STRING_COLUMNS = (
    "bill_payer_account_id",
    "bill_invoice_id",
    "line_item_usage_account_id",
    "line_item_usage_account_name",
    "line_item_line_item_type",
    "line_item_product_code",
    "line_item_usage_type",
    "line_item_resource_id",
    "line_item_line_item_description",
    "line_item_currency_code",
    "product_region_code",
)
CUR2_NUMBER_COLUMNS = (
    "line_item_unblended_cost",
    "pricing_public_on_demand_cost",
    "savings_plan_savings_plan_effective_cost",
)


def line(
    start: datetime,
    cost: float,
    *,
    account: str = "111111111111",
    kind: str = "Usage",
    product: str = "AmazonEC2",
    product_name: str = "Amazon Elastic Compute Cloud",
    usage_type: str = "USE1-BoxUsage:m5.large",
    resource: str | None = "i-0aaa",
    tags: dict[str, str] | None = None,
    hours: int = 1,
    invoice: str | None = None,
    sp_effective: float | None = None,
) -> dict[str, Any]:
    return {
        "bill_payer_account_id": "999999999999",
        "bill_invoice_id": invoice,
        "line_item_usage_account_id": account,
        "line_item_usage_account_name": f"acct-{account[-4:]}",
        "line_item_line_item_type": kind,
        "line_item_product_code": product,
        "line_item_usage_type": usage_type,
        "line_item_resource_id": resource,
        "line_item_line_item_description": f"{kind} of {product}",
        "line_item_currency_code": "USD",
        "product_region_code": "us-east-1",
        "line_item_unblended_cost": cost,
        "pricing_public_on_demand_cost": abs(cost) * 1.25,
        "savings_plan_savings_plan_effective_cost": sp_effective,
        "line_item_usage_start_date": start,
        "line_item_usage_end_date": start + timedelta(hours=hours),
        "resource_tags": tags or {},
        "product": {"product_name": product_name, "region": "us-east-1"},
    }


def cur2_table(rows: list[dict[str, Any]]) -> pa.Table:
    columns: dict[str, pa.Array] = {}
    for name in CUR2_STRING_COLUMNS:
        columns[name] = pa.array([r[name] for r in rows], type=pa.string())
    for name in CUR2_NUMBER_COLUMNS:
        columns[name] = pa.array([r[name] for r in rows], type=pa.float64())
    for name in ("line_item_usage_start_date", "line_item_usage_end_date"):
        columns[name] = pa.array([r[name].replace(tzinfo=None) for r in rows], type=pa.timestamp("ms"))
    string_map = pa.map_(pa.string(), pa.string())
    columns["resource_tags"] = pa.array([list(r["resource_tags"].items()) for r in rows], type=string_map)
    columns["product"] = pa.array([list(r["product"].items()) for r in rows], type=string_map)
    return pa.table(columns)


def parquet_bytes(rows: list[dict[str, Any]]) -> bytes:
    sink = io.BytesIO()
    pq.write_table(cur2_table(rows), sink, row_group_size=max(1, len(rows) // 3))
    return sink.getvalue()


def csv_gz_bytes(rows: list[dict[str, Any]], *, broken_cost_at: int | None = None) -> bytes:
    """CUR 2.0 as gzip CSV: timestamps ISO 8601 with Z, maps as JSON text (as Data Exports writes them)."""
    names = [*CUR2_STRING_COLUMNS, *CUR2_NUMBER_COLUMNS, "line_item_usage_start_date", "line_item_usage_end_date"]
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow([*names, "resource_tags", "product"])
    for index, row in enumerate(rows):
        values = []
        for name in names:
            value = row[name]
            if isinstance(value, datetime):
                value = value.strftime("%Y-%m-%dT%H:%M:%SZ")
            if name == "line_item_unblended_cost" and index == broken_cost_at:
                value = "12,5 USD"
            values.append("" if value is None else value)
        writer.writerow([*values, json.dumps(row["resource_tags"]), json.dumps(row["product"])])
    return gzip.compress(text.getvalue().encode())


def data_exports_manifest(bucket: str, keys: list[str], month: str, export: str = "cur2") -> bytes:
    """A Data Exports ``Manifest.json`` (the fields spendwatch reads, plus the usual others)."""
    year, mon = int(month[:4]), int(month[5:])
    end = f"{year + (mon == 12)}-{mon % 12 + 1:02d}-01T00:00:00.000Z"
    return json.dumps(
        {
            "version": "2023-11-26",
            "exportArn": f"arn:aws:bcm-data-exports:us-east-1:999999999999:export/{export}-0001",
            "exportName": export,
            "executionId": str(uuid.uuid4()),
            "billingPeriod": {"start": f"{month}-01T00:00:00.000Z", "end": end},
            "dataFiles": [f"s3://{bucket}/{k}" for k in keys],
        }
    ).encode()


def put_data_export(
    s3: Any,
    bucket: str,
    prefix: str,
    month: str,
    files: dict[str, bytes],
    *,
    manifest: bytes | None = None,
    export: str = "cur2",
) -> str:
    """Upload ``files`` as one period of a Data Export; returns the manifest key."""
    keys = []
    for name, body in files.items():
        key = f"{prefix}/data/BILLING_PERIOD={month}/{name}"
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        keys.append(key)
    manifest_key = f"{prefix}/metadata/BILLING_PERIOD={month}/{export}-Manifest.json"
    body = manifest or data_exports_manifest(bucket, keys, month, export)
    s3.put_object(Bucket=bucket, Key=manifest_key, Body=body)
    return manifest_key


def put_legacy_cur(s3: Any, bucket: str, prefix: str, start: datetime, end: datetime, body: bytes) -> str:
    """Upload one legacy CUR period: the CSV under an assembly id and the period's manifest."""
    folder = f"{prefix}/{start:%Y%m%d}-{end:%Y%m%d}"
    assembly = str(uuid.uuid4())
    key = f"{folder}/{assembly}/report-00001.csv.gz"
    s3.put_object(Bucket=bucket, Key=key, Body=gzip.compress(body))
    manifest = {
        "assemblyId": assembly,
        "account": "123412340534",
        "bucket": bucket,
        "reportKeys": [key],
        "billingPeriod": {"start": f"{start:%Y%m%dT%H%M%S}.000Z", "end": f"{end:%Y%m%dT%H%M%S}.000Z"},
        "compression": "GZIP",
        "contentType": "text/csv",
    }
    manifest_key = f"{folder}/report-Manifest.json"
    s3.put_object(Bucket=bucket, Key=manifest_key, Body=json.dumps(manifest).encode())
    return manifest_key


def bulk_cur2_table(
    lines: int,
    *,
    resources: int,
    month: datetime,
    hours: int = 720,
    owners: int = 40,
    seed: int = 7,
    resource_prefix: str = "arn:aws:ec2:us-east-1:111111111111:volume/vol-",
) -> pa.Table:
    """``lines`` CUR 2.0 line items, built vectorised (fast enough for millions).

    Costs are multiples of 1/1024, so every summation order gives exactly the same total and stores
    can be compared for equality. Line ``i`` belongs to resource ``i % resources``; each resource has
    one owner (``user_owner`` in ``resource_tags``), and every third one also a ``user_team``.
    """
    import numpy as np
    import pyarrow.compute as pc

    rng = np.random.default_rng(seed)
    resource = np.arange(lines) % resources
    start = np.datetime64(month.replace(tzinfo=None), "ms") + rng.integers(0, hours, lines).astype("timedelta64[h]")
    cost = rng.integers(1, 4096, lines) / 1024
    ids = pc.binary_join_element_wise(resource_prefix, pa.array(resource.astype(str)), "")
    owner = pc.binary_join_element_wise("person", pa.array((resource % owners).astype(str)), "@example.com", "")
    with_team = resource % 3 == 0
    sizes = np.where(with_team, 2, 1).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32)
    team_slots = offsets[:-1][with_team] + 1
    which = np.zeros(int(offsets[-1]), dtype=np.int64)  # index into owner ++ teams
    which[offsets[:-1]] = np.arange(lines)
    which[team_slots] = lines + np.arange(int(with_team.sum()))
    teams = pa.array(np.where(resource[with_team] % 2 == 0, "team-a", "team-b"), type=pa.string())
    values = pa.concat_arrays([owner.cast(pa.string()), teams]).take(pa.array(which))
    key_codes = np.zeros(int(offsets[-1]), dtype=np.int32)
    key_codes[team_slots] = 1
    keys = pa.array(np.array(["user_owner", "user_team"], dtype=object)[key_codes], type=pa.string())
    constant = {
        "bill_payer_account_id": "999999999999",
        "line_item_usage_account_id": "111111111111",
        "line_item_line_item_type": "Usage",
        "line_item_product_code": "AmazonEC2",
        "line_item_usage_type": "USE1-EBS:VolumeUsage.gp3",
        "line_item_currency_code": "USD",
        "product_region_code": "us-east-1",
    }
    columns: dict[str, pa.Array] = {
        name: pa.DictionaryArray.from_arrays(pa.array(np.zeros(lines, dtype=np.int32)), pa.array([value]))
        for name, value in constant.items()
    }
    columns["bill_invoice_id"] = pa.nulls(lines, pa.string())
    columns["line_item_resource_id"] = ids
    columns["line_item_usage_start_date"] = pa.array(start, pa.timestamp("ms"))
    columns["line_item_usage_end_date"] = pa.array(start + np.timedelta64(1, "h"), pa.timestamp("ms"))
    columns["line_item_unblended_cost"] = pa.array(cost)
    columns["pricing_public_on_demand_cost"] = pa.array(cost * 2)
    columns["resource_tags"] = pa.MapArray.from_arrays(pa.array(offsets), keys, values)
    return pa.table(columns)


# FOCUS 1.0 as AWS Data Exports writes it: costs as decimals, timestamps in UTC, Tags a map (Parquet)
# or JSON text (CSV), AWS extension columns prefixed x_.
FOCUS_STRING_COLUMNS = (
    "BillingAccountId",
    "BillingAccountName",
    "BillingCurrency",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargeFrequency",
    "ProviderName",
    "PublisherName",
    "InvoiceIssuerName",
    "RegionId",
    "RegionName",
    "ResourceId",
    "ServiceCategory",
    "ServiceName",
    "SkuId",
    "SubAccountId",
    "SubAccountName",
    "x_ServiceCode",
    "x_UsageType",
)
FOCUS_COST_COLUMNS = ("BilledCost", "EffectiveCost", "ListCost", "ContractedCost")
FOCUS_TIME_COLUMNS = ("BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd")


def focus_line(
    start: datetime,
    cost: float,
    *,
    account: str = "111111111111",
    category: str = "Usage",
    frequency: str = "Usage-Based",
    service: tuple[str, str, str] = ("AmazonEC2", "Amazon Elastic Compute Cloud", "Compute"),
    usage_type: str = "USE1-BoxUsage:m5.large",
    resource: str | None = "i-0aaa",
    tags: dict[str, str] | None = None,
    hours: int = 1,
    effective: float | None = None,
    currency: str = "USD",
) -> dict[str, Any]:
    code, name, category_of_service = service
    month = start.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return {
        "BillingAccountId": "999999999999",
        "BillingAccountName": "payer",
        "BillingCurrency": currency,
        "ChargeCategory": category,
        "ChargeClass": None,
        "ChargeDescription": f"{category} of {name}",
        "ChargeFrequency": frequency,
        "ProviderName": "AWS",
        "PublisherName": "AWS",
        "InvoiceIssuerName": "AWS",
        "RegionId": "us-east-1",
        "RegionName": "US East (N. Virginia)",
        "ResourceId": resource,
        "ServiceCategory": category_of_service,
        "ServiceName": name,
        "SkuId": f"SKU{zlib.crc32(usage_type.encode()):08X}",
        "SubAccountId": account,
        "SubAccountName": f"acct-{account[-4:]}",
        "x_ServiceCode": code,
        "x_UsageType": usage_type,
        "BilledCost": cost,
        "EffectiveCost": cost if effective is None else effective,
        "ListCost": abs(cost) * 1.25,
        "ContractedCost": cost,
        "BillingPeriodStart": month,
        "BillingPeriodEnd": datetime(month.year + (month.month == 12), month.month % 12 + 1, 1, tzinfo=month.tzinfo),
        "ChargePeriodStart": start,
        "ChargePeriodEnd": start + timedelta(hours=hours),
        "Tags": tags or {},
    }


def focus_table(rows: list[dict[str, Any]]) -> pa.Table:
    from decimal import Decimal

    columns: dict[str, pa.Array] = {}
    for name in FOCUS_STRING_COLUMNS:
        columns[name] = pa.array([r[name] for r in rows], type=pa.string())
    for name in FOCUS_COST_COLUMNS:
        values = [None if r[name] is None else Decimal(repr(r[name])) for r in rows]
        columns[name] = pa.array(values, type=pa.decimal128(38, 18))
    for name in FOCUS_TIME_COLUMNS:
        columns[name] = pa.array([r[name] for r in rows], type=pa.timestamp("ms", tz="UTC"))
    columns["Tags"] = pa.array([list(r["Tags"].items()) for r in rows], type=pa.map_(pa.string(), pa.string()))
    return pa.table(columns)


def focus_csv_gz(rows: list[dict[str, Any]]) -> bytes:
    """FOCUS as gzip CSV: ISO 8601 timestamps, Tags as a JSON object."""
    names = [*FOCUS_STRING_COLUMNS, *FOCUS_COST_COLUMNS, *FOCUS_TIME_COLUMNS]
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow([*names, "Tags"])
    for row in rows:
        values = []
        for name in names:
            value = row[name]
            if isinstance(value, datetime):
                value = value.strftime("%Y-%m-%dT%H:%M:%SZ")
            values.append("" if value is None else value)
        writer.writerow([*values, json.dumps(row["Tags"])])
    return gzip.compress(text.getvalue().encode())
