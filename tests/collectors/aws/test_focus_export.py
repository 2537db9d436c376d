"""aws-data-export reading a FOCUS 1.0 Data Export (Parquet and gzip CSV) from a moto bucket.

The expected figures come from the FOCUS mapping spendwatch already has — ``FocusReader``, the
``focus`` source's reader — run over the same files, and from a plain sum of ``BilledCost``.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from spendwatch.collect import collect_source
from spendwatch.collectors.aws.cur import DataExportConfig
from spendwatch.collectors.base import DEFAULT_JOB_TAGS, DEFAULT_OWNER_TAGS
from spendwatch.collectors.focus import FocusReader
from spendwatch.store import Store
from tests.doubles.aws_cur import focus_csv_gz, focus_line, focus_table, put_data_export
from tests.doubles.clock import FixedClock

BUCKET, PREFIX = "billing-exports", "focus/focus1"
NOV = datetime(2026, 11, 1, tzinfo=UTC)
SAGEMAKER = ("AmazonSageMaker", "Amazon SageMaker", "AI and Machine Learning")


def focus_rows() -> list[dict[str, Any]]:
    rows = []
    for h in range(36):
        start = NOV + timedelta(hours=h)
        for r in range(5):
            tags = {"user:owner": f"p{r % 3}@example.com"} if r < 4 else {}
            account = "111111111111" if r % 2 else "222222222222"
            rows.append(
                focus_line(start, (r + 1) * (h % 5 + 1) / 256, account=account, resource=f"i-{r:03d}", tags=tags)
            )
    rows.append(
        focus_line(
            NOV + timedelta(days=2),
            40.0,
            account="222222222222",
            service=SAGEMAKER,
            usage_type="USE1-Train:ml.p4d.24xlarge",
            resource="arn:aws:sagemaker:us-east-1:222222222222:training-job/llm-ft",
            tags={"aws:createdBy": "AssumedRole:AROAEXAMPLE:ben@example.com", "user:job": "llm-ft"},
            effective=28.0,  # covered by a Savings Plan
        )
    )
    rows.append(focus_line(NOV, 72.0, category="Purchase", frequency="Recurring", resource=None, hours=24 * 30))
    rows.append(focus_line(NOV, 9.5, category="Tax", frequency="One-Time", resource=None, hours=24 * 30))
    rows.append(focus_line(NOV + timedelta(days=5), -6.25, category="Credit", frequency="One-Time", resource=None))
    rows.append(focus_line(NOV + timedelta(days=5), 0.125, category="Adjustment", frequency="One-Time", resource=None))
    rows.append(focus_line(NOV + timedelta(hours=3), 1.5, account="333333333333", currency="EUR", resource="i-eu"))
    return rows


def publish(s3: Any, folder: Path, rows: list[dict[str, Any]]) -> list[Path]:
    """The period as three files (two Parquet, one gzip CSV) on disk and in the bucket with a manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    parts = [rows[0::3], rows[1::3], rows[2::3]]
    files = {}
    for number, part in enumerate(parts[:2]):
        sink = io.BytesIO()
        pq.write_table(focus_table(part), sink, row_group_size=max(1, len(part) // 2))
        files[f"focus1-{number:05d}.snappy.parquet"] = sink.getvalue()
    files["focus1-00002.csv.gz"] = focus_csv_gz(parts[2])
    for name, body in files.items():
        (folder / name).write_bytes(body)
    put_data_export(s3, BUCKET, PREFIX, "2026-11", files, export="focus1")
    return [folder / name for name in files]


def config(moto: Any) -> DataExportConfig:
    return DataExportConfig.model_validate(
        {
            "name": "focus",
            "bucket": BUCKET,
            "prefix": PREFIX,
            "backfill": "60d",
            "aws": {"region": "us-east-1", "endpoint_url": moto.endpoint_url},
        }
    )


@pytest.fixture
def s3(moto_server: Any) -> Any:
    import boto3

    client = boto3.client("s3", endpoint_url=moto_server.endpoint_url, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    return client


def test_a_focus_data_export_loads_with_the_totals_of_the_focus_mapping(
    moto_server: Any, s3: Any, tmp_path: Path, clock: FixedClock, clients: dict[str, Any]
) -> None:
    rows = focus_rows()
    files = publish(s3, tmp_path / "export", rows)
    store = Store(tmp_path / "s.duckdb", clock=clock)

    run = collect_source(config(moto_server), store, clock, clients=clients)

    assert run.ok, run.error or run.problems
    assert run.counters["aws_cur_line_items"] == len(rows)
    # What the focus source's reader makes of the same files, line by line …
    reader = FocusReader(DEFAULT_OWNER_TAGS, DEFAULT_JOB_TAGS)
    mapped = pa.concat_tables([reader.read_file(path) for path in files])
    expected = mapped.group_by(["sub_account_id", "charge_category", "billing_currency"]).aggregate(
        [("billed_cost", "sum"), ("effective_cost", "sum"), ("list_cost", "sum")]
    )
    want = sorted(
        (
            r["sub_account_id"],
            r["charge_category"],
            r["billing_currency"],
            r["billed_cost_sum"],
            r["effective_cost_sum"],
        )
        for r in expected.to_pylist()
    )
    got = store.query(
        "SELECT sub_account_id, charge_category, billing_currency, sum(billed_cost), sum(effective_cost) "
        "FROM cost_lines GROUP BY ALL ORDER BY ALL"
    )
    assert got == want
    # … and a plain sum of BilledCost per currency, straight from the files: no currency is added to another.
    direct: dict[str, float] = {}
    for row in rows:
        direct[row["BillingCurrency"]] = direct.get(row["BillingCurrency"], 0.0) + row["BilledCost"]
    per_currency = dict(store.query("SELECT billing_currency, sum(billed_cost) FROM cost_lines GROUP BY 1"))
    assert per_currency == direct
    assert direct["EUR"] == 1.5 and len(direct) == 2
    assert pc.sum(mapped.column("billed_cost")).as_py() == sum(direct.values())


def test_focus_owners_jobs_and_columns_follow_the_focus_mapping(
    moto_server: Any, s3: Any, tmp_path: Path, clock: FixedClock, clients: dict[str, Any]
) -> None:
    files = publish(s3, tmp_path / "export", focus_rows())
    store = Store(tmp_path / "s.duckdb", clock=clock)
    assert collect_source(config(moto_server), store, clock, clients=clients).ok

    mapped = pa.concat_tables([FocusReader(DEFAULT_OWNER_TAGS, DEFAULT_JOB_TAGS).read_file(p) for p in files])
    owners = {
        (r["resource_id"], r["owner"]) for r in mapped.to_pylist() if r["resource_id"] and r["resource_id"][:2] == "i-"
    }
    stored = set(store.query("SELECT DISTINCT resource_id, owner FROM cost_lines WHERE resource_id LIKE 'i-%'"))
    assert stored == owners
    training = store.query(
        "SELECT provider, owner, job_id, service_name, service_category, sku_id, billed_cost, effective_cost "
        "FROM cost_lines WHERE resource_id LIKE '%training-job%'"
    )
    # aws:createdBy names the principal; spendwatch keeps the person (the focus reader keeps the raw tag).
    assert training == [
        (
            "aws",
            "ben@example.com",
            "llm-ft",
            "Amazon SageMaker",
            "AI and Machine Learning",
            "USE1-Train:ml.p4d.24xlarge",
            40.0,
            28.0,
        )
    ]
    raw = [r["owner"] for r in mapped.to_pylist() if r["job_id"] == "llm-ft"]
    assert raw == ["AssumedRole:AROAEXAMPLE:ben@example.com"]
    spans = store.query(
        "SELECT charge_category, charge_frequency, charge_period_start, charge_period_end FROM cost_lines "
        "WHERE charge_category IN ('Purchase', 'Tax') ORDER BY 1"
    )
    end = datetime(2026, 12, 1, tzinfo=UTC)
    assert spans == [("Purchase", "Recurring", NOV, end), ("Tax", "One-Time", NOV, end)]
