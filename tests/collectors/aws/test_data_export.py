"""aws-data-export: CUR 2.0 (Parquet + gzip CSV) and legacy CUR in a moto S3 bucket on 127.0.0.1."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import duckdb
import pytest
from botocore.stub import Stubber

from spendwatch.collect import collect_source
from spendwatch.collectors.aws.cur import DataExportConfig, data_keys, manifest_period
from spendwatch.collectors.aws.cur_files import ExportFile
from spendwatch.collectors.aws.cur_load import CurLoader
from spendwatch.collectors.aws.cur_sql import Grain, kept_tag_keys, snake, tag_candidates
from spendwatch.collectors.base import DEFAULT_JOB_TAGS, DEFAULT_OWNER_TAGS
from spendwatch.errors import InputError
from spendwatch.store import Store
from tests.doubles.aws_calls import CallLog
from tests.doubles.aws_cur import csv_gz_bytes, line, parquet_bytes, put_data_export, put_legacy_cur
from tests.doubles.clock import FixedClock

BUCKET = "billing-exports"
PREFIX = "cur/cur2"
NOV = datetime(2026, 11, 1, tzinfo=UTC)
OCT = datetime(2026, 10, 1, tzinfo=UTC)


def hour(month: datetime, day: int, h: int = 0) -> datetime:
    return month.replace(day=day, hour=h)


def november_rows() -> list[dict[str, Any]]:
    rows = []
    for h in range(6):
        rows.append(line(hour(NOV, 3, h), 2.0, resource="i-0big", tags={"user_owner": "alice@example.com"}))
        rows.append(line(hour(NOV, 3, h), 0.5, resource="i-0big", usage_type="USE1-EBS:VolumeUsage.gp3"))
        rows.append(line(hour(NOV, 3, h), 0.01, resource=f"i-0small{h}", account="222222222222"))
    rows.append(
        line(
            hour(NOV, 4, 10),
            30.0,
            account="222222222222",
            product="AmazonSageMaker",
            product_name="Amazon SageMaker",
            usage_type="USE1-Train:ml.p4d.24xlarge",
            resource="arn:aws:sagemaker:us-east-1:222222222222:training-job/llm-ft",
            tags={"aws_created_by": "AssumedRole:AROAEXAMPLE:ben@example.com", "user_job": "llm-ft"},
            kind="SavingsPlanCoveredUsage",
            sp_effective=21.0,
        )
    )
    rows.append(line(hour(NOV, 4, 10), -30.0, account="222222222222", kind="SavingsPlanNegation", resource=None))
    rows.append(line(NOV, 5.0, kind="Tax", product="AmazonEC2", resource=None, hours=24 * 30))
    rows.append(line(hour(NOV, 5), -3.0, kind="Credit", resource=None))
    return rows


def config(moto: Any, **extra: Any) -> DataExportConfig:
    values: dict[str, Any] = {
        "name": "cur",
        "type": "aws-data-export",
        "bucket": BUCKET,
        "prefix": PREFIX,
        "backfill": "90d",
        "aws": {"region": "us-east-1", "endpoint_url": moto.endpoint_url if moto else None},
        **extra,
    }
    return DataExportConfig.model_validate(values)


@pytest.fixture
def s3(moto_server: Any) -> Any:
    """The test's own S3 client (set-up calls are not the collector's, so they are not recorded)."""
    import boto3

    client = boto3.client("s3", endpoint_url=moto_server.endpoint_url, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    return client


def by_account_category(store: Store) -> dict[tuple[str, str], float]:
    rows = store.query(
        "SELECT sub_account_id, charge_category, round(sum(billed_cost), 6) FROM cost_lines GROUP BY ALL"
    )
    return {(a, c): v for a, c, v in rows}


def direct_sums(rows: list[dict[str, Any]]) -> dict[tuple[str, str], float]:
    categories = {"Usage": "Usage", "SavingsPlanCoveredUsage": "Usage", "SavingsPlanNegation": "Credit"}
    categories |= {"Tax": "Tax", "Credit": "Credit"}
    out: dict[tuple[str, str], float] = {}
    for row in rows:
        key = (row["line_item_usage_account_id"], categories[row["line_item_line_item_type"]])
        out[key] = round(out.get(key, 0.0) + row["line_item_unblended_cost"], 6)
    return out


def test_parquet_and_gzip_csv_period_loads_with_tags_owner_and_job(
    moto_server: Any, s3: Any, store: Store, clock: FixedClock, clients: dict[str, Any], call_log: CallLog
) -> None:
    rows = november_rows()
    put_data_export(
        s3,
        BUCKET,
        PREFIX,
        "2026-11",
        {"cur2-00001.snappy.parquet": parquet_bytes(rows[:10]), "cur2-00002.csv.gz": csv_gz_bytes(rows[10:])},
    )

    run = collect_source(config(moto_server), store, clock, clients=clients)

    assert run.ok, run.error or run.problems
    assert by_account_category(store) == direct_sums(rows)
    assert run.periods == 1  # a small month is replaced in one transaction
    assert store.query("SELECT period_start, period_end FROM loads") == [(NOV, datetime(2026, 12, 1, tzinfo=UTC))]
    assert run.counters["aws_cur_line_items"] == len(rows)
    training = store.query(
        "SELECT owner, job_id, tags, service_name, service_category, billed_cost, effective_cost, is_estimated "
        "FROM cost_lines WHERE sku_id LIKE '%Train%'"
    )
    assert training == [
        (
            "ben@example.com",
            "llm-ft",
            {"aws:createdBy": "AssumedRole:AROAEXAMPLE:ben@example.com", "job": "llm-ft"},
            "Amazon SageMaker",
            "AI and Machine Learning",
            30.0,
            21.0,
            True,
        )
    ]
    alice = store.query(
        "SELECT DISTINCT owner, tags FROM cost_lines WHERE resource_id = 'i-0big' AND owner IS NOT NULL"
    )
    assert alice == [("alice@example.com", {"owner": "alice@example.com"})]
    tax = store.query(
        "SELECT charge_period_start, charge_period_end, charge_frequency FROM cost_lines WHERE charge_category = 'Tax'"
    )
    assert tax == [(NOV, datetime(2026, 12, 1, tzinfo=UTC), "One-Time")]
    hourly = store.query("SELECT count(*) FROM cost_lines WHERE resource_id = 'i-0big' AND sku_id LIKE '%BoxUsage%'")
    assert hourly == [(6,)]
    assert {c[1] for c in call_log.calls} >= {"ListObjectsV2", "GetObject"}


def test_unchanged_manifest_loads_nothing_and_a_restated_month_replaces(
    moto_server: Any, s3: Any, store: Store, clock: FixedClock, clients: dict[str, Any]
) -> None:
    rows = november_rows()
    put_data_export(s3, BUCKET, PREFIX, "2026-11", {"a.parquet": parquet_bytes(rows)})
    assert collect_source(config(moto_server), store, clock, clients=clients).ok

    again = collect_source(config(moto_server), store, clock, clients=clients)
    assert again.ok and again.periods == 0

    restated = [dict(r, line_item_unblended_cost=r["line_item_unblended_cost"] * 2) for r in rows[:12]]
    put_data_export(s3, BUCKET, PREFIX, "2026-11", {"a.parquet": parquet_bytes(restated)})
    third = collect_source(config(moto_server), store, clock, clients=clients)

    assert third.ok and third.periods == 1
    assert by_account_category(store) == direct_sums(restated)
    assert store.query("SELECT sum(billed_cost) FROM cost_lines")[0][0] == pytest.approx(
        sum(r["line_item_unblended_cost"] for r in restated)
    )


def test_malformed_manifest_is_a_problem_naming_the_key_and_other_months_load(
    moto_server: Any, s3: Any, store: Store, clock: FixedClock, clients: dict[str, Any]
) -> None:
    october = [line(hour(OCT, 20, 1), 7.0)]
    put_data_export(
        s3, BUCKET, PREFIX, "2026-10", {"a.parquet": parquet_bytes(october)}, manifest=b'{"dataFiles": "oops"'
    )
    put_data_export(s3, BUCKET, PREFIX, "2026-11", {"a.parquet": parquet_bytes(november_rows())})

    run = collect_source(config(moto_server), store, clock, clients=clients)

    assert run.problems == [
        f"cur 2026-10: s3://{BUCKET}/{PREFIX}/metadata/BILLING_PERIOD=2026-10/cur2-Manifest.json: "
        "malformed manifest: not JSON (Expecting ',' delimiter)"
    ]
    assert by_account_category(store) == direct_sums(november_rows())
    assert store.get_state("cur", "manifest:2026-10") is None


def test_a_bad_value_in_a_file_names_the_object_and_keeps_the_previous_load(
    moto_server: Any, s3: Any, store: Store, clock: FixedClock, clients: dict[str, Any]
) -> None:
    rows = november_rows()
    put_data_export(s3, BUCKET, PREFIX, "2026-11", {"a.parquet": parquet_bytes(rows)})
    assert collect_source(config(moto_server), store, clock, clients=clients).ok
    before = by_account_category(store)

    put_data_export(
        s3,
        BUCKET,
        PREFIX,
        "2026-11",
        {"a.parquet": parquet_bytes(rows), "b.csv.gz": csv_gz_bytes(rows, broken_cost_at=2)},
    )
    run = collect_source(config(moto_server), store, clock, clients=clients)

    assert len(run.problems) == 1
    assert run.problems[0].startswith(f"cur 2026-11: s3://{BUCKET}/{PREFIX}/data/BILLING_PERIOD=2026-11/b.csv.gz: ")
    assert "12,5 USD" in run.problems[0]
    assert by_account_category(store) == before


def test_closed_months_are_not_reread_but_open_ones_are(
    moto_server: Any, s3: Any, store: Store, clock: FixedClock, clients: dict[str, Any], call_log: CallLog
) -> None:
    put_data_export(
        s3, BUCKET, PREFIX, "2026-09", {"a.parquet": parquet_bytes([line(datetime(2026, 9, 9, tzinfo=UTC), 1.0)])}
    )
    put_data_export(s3, BUCKET, PREFIX, "2026-10", {"a.parquet": parquet_bytes([line(hour(OCT, 9), 2.0)])})
    put_data_export(s3, BUCKET, PREFIX, "2026-11", {"a.parquet": parquet_bytes([line(hour(NOV, 9), 3.0)])})
    assert collect_source(config(moto_server), store, clock, clients=clients).ok
    call_log.calls.clear()

    clock.set(datetime(2026, 11, 20, tzinfo=UTC))  # past the 15th: October is closed now
    assert collect_source(config(moto_server), store, clock, clients=clients).ok
    manifests_read = [p["Key"] for p in call_log.operations("s3", "GetObject") if p["Key"].endswith("Manifest.json")]
    assert manifests_read == [f"{PREFIX}/metadata/BILLING_PERIOD=2026-11/cur2-Manifest.json"]

    clock.set(datetime(2026, 11, 10, tzinfo=UTC))  # before the 15th October is still open
    call_log.calls.clear()
    assert collect_source(config(moto_server), store, clock, clients=clients).ok
    manifests_read = [p["Key"] for p in call_log.operations("s3", "GetObject") if p["Key"].endswith("Manifest.json")]
    assert [k.split("=")[1][:7] for k in manifests_read] == ["2026-10", "2026-11"]


def test_legacy_cur_manifest_period_is_loaded(
    moto_server: Any, s3: Any, store: Store, clock: FixedClock, clients: dict[str, Any], shared_dir: Path
) -> None:
    sample = shared_dir / "real-data" / "provider-exports" / "aws-cur-sample.csv"
    put_legacy_cur(
        s3,
        BUCKET,
        "legacy/report",
        datetime(2023, 11, 1, tzinfo=UTC),
        datetime(2023, 12, 1, tzinfo=UTC),
        sample.read_bytes(),
    )
    clock.set(datetime(2023, 11, 20, tzinfo=UTC))

    run = collect_source(config(moto_server, prefix="legacy/report"), store, clock, clients=clients)

    assert run.ok, run.error or run.problems
    assert by_account_category(store) == legacy_direct_sums(sample)


def legacy_direct_sums(sample: Path) -> dict[tuple[str, str], float]:
    rows = duckdb.sql(
        f"""SELECT "lineItem/UsageAccountId", "lineItem/LineItemType",
                   round(sum(CAST("lineItem/UnblendedCost" AS DOUBLE)), 6)
            FROM read_csv('{sample}', all_varchar = true) GROUP BY ALL"""
    ).fetchall()
    return {(a, {"Usage": "Usage", "Tax": "Tax"}[t]): v for a, t, v in rows}


def test_legacy_cur_sample_totals_match_the_file_per_account_and_category(shared_dir: Path, tmp_path: Path) -> None:
    sample = shared_dir / "real-data" / "provider-exports" / "aws-cur-sample.csv"
    tags = kept_tag_keys(DEFAULT_OWNER_TAGS, DEFAULT_JOB_TAGS, [])
    period = (datetime(2023, 11, 1, tzinfo=UTC), datetime(2023, 12, 1, tzinfo=UTC))
    with CurLoader(
        tag_keys=tags, owner_tags=DEFAULT_OWNER_TAGS, job_tags=DEFAULT_JOB_TAGS, grain=Grain(), work_dir=tmp_path
    ) as loader:
        loader.load([ExportFile(sample, sample.name)])
        loader.finish(*period)
        days = list(loader.batches(*period, max_rows=100))
        assert loader.line_items == 1281
    assert len(days) > 1 and days[0][0] == period[0] and days[-1][1] == period[1]
    assert all(a[1] == b[0] for a, b in pairwise(days))  # contiguous runs of days

    store = Store(tmp_path / "s.duckdb")
    for start, end, table in days:
        store.replace_cost_lines("legacy", start, end, table)
    assert by_account_category(store) == legacy_direct_sums(sample)
    assert store.query("SELECT count(*) FROM cost_lines WHERE service_name IS NULL OR sub_account_id IS NULL") == [(0,)]
    assert store.query("SELECT count(*) FROM cost_lines WHERE is_estimated")[0][0] > 0  # no invoice id yet


@pytest.mark.parametrize(
    ("grain", "resources"),
    [
        ({"resources": "none"}, set()),
        (
            {"resources": "all"},
            {"i-0big", "i-0small0", "i-0small1", "i-0small2", "i-0small3", "i-0small4", "i-0small5"},
        ),
        ({"resources": "top", "top_resources": 1}, {"i-0big"}),
    ],
)
def test_grain_keeps_the_resources_it_promises(
    moto_server: Any,
    s3: Any,
    store: Store,
    clock: FixedClock,
    clients: dict[str, Any],
    grain: dict[str, Any],
    resources: set[str],
) -> None:
    rows = [
        r
        for r in november_rows()
        if r["line_item_product_code"] == "AmazonEC2" and r["line_item_line_item_type"] == "Usage"
    ]
    put_data_export(s3, BUCKET, PREFIX, "2026-11", {"a.parquet": parquet_bytes(rows)})

    run = collect_source(config(moto_server, grain=grain), store, clock, clients=clients)

    assert run.ok, run.error or run.problems
    kept = {r for (r,) in store.query("SELECT DISTINCT resource_id FROM cost_lines WHERE resource_id IS NOT NULL")}
    assert kept == resources
    assert store.query("SELECT round(sum(billed_cost), 6) FROM cost_lines")[0][0] == round(
        sum(r["line_item_unblended_cost"] for r in rows), 6
    )


def test_daily_grain_stores_one_row_per_day_and_key(
    moto_server: Any, s3: Any, store: Store, clock: FixedClock, clients: dict[str, Any]
) -> None:
    rows = [line(hour(NOV, 3, h), 1.0) for h in range(24)]
    put_data_export(s3, BUCKET, PREFIX, "2026-11", {"a.parquet": parquet_bytes(rows)})

    assert collect_source(config(moto_server, grain={"period": "daily"}), store, clock, clients=clients).ok

    assert store.query("SELECT charge_period_start, charge_period_end, billed_cost FROM cost_lines") == [
        (hour(NOV, 3), hour(NOV, 4), 24.0)
    ]


def test_no_manifest_at_all_is_an_error_naming_the_location(
    moto_server: Any, s3: Any, store: Store, clock: FixedClock, clients: dict[str, Any]
) -> None:
    run = collect_source(config(moto_server), store, clock, clients=clients)
    assert (run.error or "").startswith(f"source cur: no billing-period manifests under s3://{BUCKET}/{PREFIX} ")
    assert run.user_error  # a wrong bucket or prefix is the user's to fix (exit 2)


def test_access_denied_on_listing_names_s3_listbucket(
    store: Store, clock: FixedClock, clients: dict[str, Any], aws_session: Any
) -> None:
    client = aws_session.client("s3", region_name="us-east-1")
    stub = Stubber(client)
    stub.add_client_error("list_objects_v2", "AccessDenied", "Access Denied", http_status_code=403)
    stub.activate()

    run = collect_source(config(None), store, clock, clients={**clients, "aws:s3": client})

    assert run.error is not None and run.error.startswith("source cur: AWS denied s3:ListBucket (AccessDenied)")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[]", "not a JSON object"),
        (b"{}", "neither dataFiles nor reportKeys"),
        (b'{"dataFiles": ["data/x.parquet"]}', "list of s3:// URIs"),
        (b'{"reportKeys": [""]}', "list of object keys"),
        (b'{"dataFiles": ["s3://b/x.json"]}', "x.json is not a Parquet or CSV file"),
    ],
)
def test_manifest_validator_rejects_bad_manifests(body: bytes, message: str) -> None:
    with pytest.raises(InputError, match=message):
        data_keys(body, "b", "m/cur-Manifest.json")


def test_manifest_keys_name_their_period() -> None:
    assert manifest_period("p/x/metadata/BILLING_PERIOD=2026-02/x-Manifest.json") == (
        datetime(2026, 2, 1, tzinfo=UTC),
        datetime(2026, 3, 1, tzinfo=UTC),
    )
    assert manifest_period("p/r/20231101-20231201/r-Manifest.json") == (
        datetime(2023, 11, 1, tzinfo=UTC),
        datetime(2023, 12, 1, tzinfo=UTC),
    )
    assert manifest_period("p/r/20231101-20231201/abc-123/r-Manifest.json") is None  # an assembly's copy
    assert manifest_period("p/x/data/BILLING_PERIOD=2026-02/x-00001.parquet") is None


def test_tag_spellings_and_snake_names() -> None:
    assert tag_candidates("owner") == ["owner", "user:owner", "user_owner"]
    assert "aws_created_by" in tag_candidates("aws:createdBy")
    assert snake("lineItem/UsageStartDate") == "line_item_usage_start_date"
    assert snake("savingsPlan/SavingsPlanEffectiveCost") == "savings_plan_savings_plan_effective_cost"


def test_a_file_that_is_not_a_cost_export_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.csv.gz"
    path.write_bytes(gzip.compress(b"a,b\n1,2\n"))
    with (
        CurLoader(tag_keys=[], owner_tags=[], job_tags=[], grain=Grain(resources="none"), work_dir=tmp_path) as loader,
        pytest.raises(
            InputError, match=r"s3://b/x.csv.gz: not an AWS cost export: missing column\(s\) line_item_usage_start_date"
        ),
    ):
        loader.load([ExportFile(path, "s3://b/x.csv.gz")])
