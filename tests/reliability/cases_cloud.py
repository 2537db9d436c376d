"""Bad CUR / Data Export files and manifests in S3 (moto), and bad API answers (Cost Explorer, BigQuery).

The clouds are the suite's loopback fakes: a moto server (reset per case) and the fake Google API
server with its BigQuery routes. Months and days are relative to now, as the CLI runs on the real clock.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from tests.doubles.aws_cur import csv_gz_bytes, cur2_table, data_exports_manifest, line, parquet_bytes
from tests.reliability.cases_files import parquet
from tests.reliability.corpus import Build, Case, Workspace, case

BUCKET, PREFIX = "billing-exports", "cur/cur2"
NOW = datetime.now(UTC)
MONTH = f"{NOW:%Y-%m}"
MONTH_START = NOW.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
MANIFEST_KEY = f"{PREFIX}/metadata/BILLING_PERIOD={MONTH}/cur2-Manifest.json"


def _rows() -> list[dict[str, Any]]:
    return [line(MONTH_START + timedelta(hours=h), 1.5 + h) for h in range(4)]


def _s3(workspace: Workspace) -> Any:
    import boto3

    moto = workspace.service("moto")
    client = boto3.client("s3", endpoint_url=moto.endpoint_url, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    return client


def cur_source(workspace: Workspace, bucket: str = BUCKET) -> None:
    moto = workspace.service("moto")
    workspace.with_sources(
        f"  - name: cur\n    type: aws-data-export\n    bucket: {bucket}\n    prefix: {PREFIX}\n"
        f"    aws: {{region: us-east-1, endpoint_url: '{moto.endpoint_url}', max_attempts: 1}}\n"
    )


def export(files: dict[str, bytes], manifest: bytes | Callable[[list[str]], bytes] | None = None) -> Build:
    """Upload ``files`` as this month's Data Export with ``manifest`` (default: a good one listing them)."""

    def build(workspace: Workspace) -> list[str]:
        s3 = _s3(workspace)
        keys = []
        for name, body in files.items():
            key = f"{PREFIX}/data/BILLING_PERIOD={MONTH}/{name}"
            s3.put_object(Bucket=BUCKET, Key=key, Body=body)
            keys.append(key)
        if callable(manifest):
            body = manifest(keys)
        else:
            body = manifest if manifest is not None else data_exports_manifest(BUCKET, keys, MONTH)
        s3.put_object(Bucket=BUCKET, Key=MANIFEST_KEY, Body=body)
        cur_source(workspace)
        return ["-c", str(workspace.config), "collect", "--source", "cur"]

    return build


def cur(id: str, build: Build, *expect: str, exit_code: int = 2) -> Case:
    return case("cur", id, build, *expect, exit_code=exit_code, needs=("moto",))


def _listing(extra: dict[str, Any]) -> Callable[[list[str]], bytes]:
    def manifest(keys: list[str]) -> bytes:
        document = json.loads(data_exports_manifest(BUCKET, keys, MONTH))
        document.update(extra)
        return json.dumps(document).encode()

    return manifest


def _without_files(keys: list[str]) -> bytes:
    document = json.loads(data_exports_manifest(BUCKET, keys, MONTH))
    del document["dataFiles"]
    return json.dumps(document).encode()


def _missing_file(keys: list[str]) -> bytes:
    return data_exports_manifest(BUCKET, [*keys, f"{PREFIX}/data/BILLING_PERIOD={MONTH}/gone.parquet"], MONTH)


def _table_without(column: str) -> bytes:
    return parquet(cur2_table(_rows()).drop_columns([column]))


def _cost_column(values: list[Any], kind: pa.DataType) -> bytes:
    table = cur2_table(_rows())
    index = table.column_names.index("line_item_unblended_cost")
    return parquet(table.set_column(index, "line_item_unblended_cost", pa.array(values, kind)))


def _csv_with_bad_date() -> bytes:
    text = gzip.decompress(csv_gz_bytes(_rows())).decode()
    return gzip.compress(text.replace(f"{MONTH_START:%Y-%m-%dT%H:%M:%SZ}", "soon", 1).encode())


def no_manifests(workspace: Workspace) -> list[str]:
    _s3(workspace).put_object(Bucket=BUCKET, Key=f"{PREFIX}/readme.txt", Body=b"nothing here")
    cur_source(workspace)
    return ["-c", str(workspace.config), "collect", "--source", "cur"]


def no_bucket(workspace: Workspace) -> list[str]:
    workspace.service("moto")
    cur_source(workspace, bucket="no-such-billing-bucket")
    return ["-c", str(workspace.config), "collect", "--source", "cur"]


GOOD = {"part-0.parquet": parquet_bytes(_rows())}
MANIFEST = f"BILLING_PERIOD={MONTH}/cur2-Manifest.json"

CUR_CASES: list[Case] = [
    cur("manifest-not-json", export(GOOD, b"{not json"), MANIFEST, "malformed manifest: not JSON"),
    cur("manifest-a-list", export(GOOD, b"[1, 2]"), MANIFEST, "not a JSON object"),
    cur("manifest-no-files", export(GOOD, _without_files), MANIFEST, "neither dataFiles nor reportKeys"),
    cur("manifest-bad-uris", export(GOOD, _listing({"dataFiles": ["part-0.parquet"]})), MANIFEST, "s3:// URIs"),
    cur(
        "manifest-lists-text",
        export({"notes.txt": b"hello"}),
        MANIFEST,
        "notes.txt is not a Parquet or CSV file",
    ),
    cur("manifest-lists-nothing", export(GOOD, data_exports_manifest(BUCKET, [], MONTH)), MANIFEST, "no data files"),
    cur("listed-file-missing", export(GOOD, _missing_file), "gone.parquet", "listed in the manifest but not in"),
    cur("parquet-garbage", export({"part-0.parquet": b"PAR1 this is not parquet"}), "part-0.parquet"),
    cur("parquet-truncated", export({"part-0.parquet": GOOD["part-0.parquet"][:300]}), "part-0.parquet"),
    cur("csv-not-gzip", export({"part-0.csv.gz": b"plain text, not gzip"}), "part-0.csv.gz"),
    cur(
        "csv-cost-with-unit",
        export({"part-0.csv.gz": csv_gz_bytes(_rows(), broken_cost_at=2)}),
        "part-0.csv.gz",
        "'12,5 USD'",
    ),
    cur(
        "missing-cost-column",
        export({"part-0.parquet": _table_without("line_item_unblended_cost")}),
        "part-0.parquet",
    ),
    cur(
        "cost-infinite",
        export({"part-0.parquet": _cost_column([1.0, float("inf"), 2.0, 3.0], pa.float64())}),
        "billed_cost is inf",
    ),
    cur(
        "cost-text",
        export({"part-0.parquet": _cost_column(["1", "two", "3", "4"], pa.string())}),
        "part-0.parquet",
    ),
    cur("start-date-words", export({"part-0.csv.gz": _csv_with_bad_date()}), "part-0.csv.gz", "soon"),
    cur("csv-gz-utf16", export({"part-0.csv.gz": gzip.compress("a,b\n1,2\n".encode("utf-16"))}), "part-0.csv.gz"),
    cur("no-manifests", no_manifests, "no billing-period manifests", f"s3://{BUCKET}/{PREFIX}"),
    cur("no-bucket", no_bucket, "bucket 'no-such-billing-bucket' does not exist"),
]


# -- Cost Explorer answers (moto's static results) ----------------------------------------------------

YESTERDAY = (NOW - timedelta(days=1)).strftime("%Y-%m-%d")
TODAY = NOW.strftime("%Y-%m-%d")


def _ce_group(keys: list[str], amount: Any = "1.5", unit: Any = "USD", metrics: bool = True) -> dict[str, Any]:
    group: dict[str, Any] = {"Keys": keys}
    if metrics:
        group["Metrics"] = {
            "UnblendedCost": {"Amount": amount, "Unit": unit},
            "AmortizedCost": {"Amount": amount, "Unit": unit},
        }
    return group


def _ce_page(groups: list[dict[str, Any]], start: str = YESTERDAY, end: str = TODAY) -> dict[str, Any]:
    return {
        "GroupDefinitions": [],
        "ResultsByTime": [{"TimePeriod": {"Start": start, "End": end}, "Total": {}, "Groups": groups}],
        "DimensionValueAttributes": [],
    }


def cost_explorer(page: dict[str, Any]) -> Build:
    def build(workspace: Workspace) -> list[str]:
        moto = workspace.service("moto")
        moto.seed_cost_explorer([page] * 8)
        workspace.with_sources(
            "  - name: ce\n    type: aws-cost-explorer\n    backfill: 1d\n    restatement_window: 1d\n"
            f"    aws: {{region: us-east-1, endpoint_url: '{moto.endpoint_url}', max_attempts: 1}}\n"
        )
        return ["-c", str(workspace.config), "collect", "--source", "ce"]

    return build


def api(id: str, build: Build, *expect: str, needs: str = "moto") -> Case:
    return case("api", id, build, *expect, needs=(needs,))


ACCOUNT_SERVICE = ["111111111111", "Amazon Elastic Compute Cloud - Compute"]

API_CASES: list[Case] = [
    api("ce-amount-words", cost_explorer(_ce_page([_ce_group(ACCOUNT_SERVICE, "lots")])), "no numeric UnblendedCost"),
    api("ce-amount-nan", cost_explorer(_ce_page([_ce_group(ACCOUNT_SERVICE, "NaN")])), "not a finite amount"),
    api("ce-amount-inf", cost_explorer(_ce_page([_ce_group(ACCOUNT_SERVICE, "Infinity")])), "not a finite amount"),
    api("ce-amount-null", cost_explorer(_ce_page([_ce_group(ACCOUNT_SERVICE, None)])), "no numeric UnblendedCost"),
    api("ce-no-unit", cost_explorer(_ce_page([_ce_group(ACCOUNT_SERVICE, "1.5", "")])), "not a finite amount in a"),
    api("ce-no-metrics", cost_explorer(_ce_page([_ce_group(ACCOUNT_SERVICE, metrics=False)])), "no numeric"),
    api(
        "ce-keys-mismatch",
        cost_explorer(_ce_page([_ce_group(["111111111111", "EC2", "extra"])])),
        "answered 3 group key(s) for 2 group-by(s)",
    ),
    api(
        "ce-period-month-13",
        cost_explorer(_ce_page([_ce_group(ACCOUNT_SERVICE)], start="2026-13-01")),
        "without a valid TimePeriod",
    ),
    api(
        "ce-period-outside",
        cost_explorer(_ce_page([_ce_group(ACCOUNT_SERVICE)], start="1999-01-01", end="1999-01-02")),
        "outside the requested",
    ),
]


# -- BigQuery answers (the fake Google API server) -----------------------------------------------------


def bigquery(rows: Callable[[datetime], list[dict[str, Any]]]) -> Build:
    """A gcp-billing-export source whose aggregation query answers ``rows(chunk start)``."""

    def build(workspace: Workspace) -> list[str]:
        from tests.collectors.gcp.export_fixtures import AGGREGATE_SCHEMA, STANDARD_SCHEMA, TABLE
        from tests.doubles.google_bigquery import FakeBigQuery, QueryAnswer

        server = workspace.service("google")
        server.reset()
        fake = FakeBigQuery(server)
        fake.add_table(TABLE, STANDARD_SCHEMA)
        fake.on_query(lambda call: QueryAnswer(AGGREGATE_SCHEMA, rows(call.parameters["start"])))
        workspace.with_sources(
            f"  - name: gcp\n    type: gcp-billing-export\n    table: {TABLE}\n    backfill: 2d\n"
            f"    gcp: {{project: billing-proj, anonymous: true, endpoints: {{bigquery: '{server.endpoint}'}}}}\n"
            "    retry: {initial: 0.01s, maximum: 0.05s, deadline: 5s}\n"
        )
        return ["-c", str(workspace.config), "collect", "--source", "gcp"]

    return build


def _export_row(start: datetime, **change: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "period_start": start,
        "billing_account_id": "0A1B2C-3D4E5F-6A7B8C",
        "project_id": "analytics-warehouse",
        "project_name": "Analytics Warehouse",
        "service_id": "24E6-581D-38E5",
        "service_name": "BigQuery",
        "sku_id": "3362-E469-6BEF",
        "sku_description": "Analysis",
        "region_id": "us",
        "cost_type": "regular",
        "currency": "USD",
        "label_0": None,
        "label_1": None,
        "label_2": None,
        "cost": 10.0,
        "credits": 0.0,
        "list_cost": 11.0,
        "source_rows": 3,
    }
    row.update(change)
    return row


def _rows_with(**change: Any) -> Callable[[datetime], list[dict[str, Any]]]:
    return lambda start: [_export_row(start), _export_row(start, **change)]


API_CASES += [
    api("bq-no-currency", bigquery(_rows_with(currency=None)), "BigQuery answered rows", "no currency", needs="google"),
    api("bq-no-start", bigquery(_rows_with(period_start=None)), "no usage_start_time", needs="google"),
    api("bq-cost-infinite", bigquery(_rows_with(cost=float("inf"))), "billed_cost is inf", needs="google"),
    api("bq-cost-absurd", bigquery(_rows_with(cost=1e300)), "billed_cost is 1e+300", needs="google"),
]

CASES: list[Case] = [*CUR_CASES, *API_CASES]
