"""Throttling end to end: real 503 SlowDown / ThrottlingException answers from a proxy in front of moto.

botocore's adaptive retry mode retries inside one call (its ``amz-sdk-request`` header counts the
attempts); when it gives up, spendwatch's own backoff calls again; when that gives up too, the run
reports one line. botocore really sleeps (and, adaptive, slows its send rate) between attempts, so
the fault counts stay small. ``aws.max_attempts`` counts tries per call, the first included.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import pytest

from spendwatch.collect import collect_source
from spendwatch.collectors.aws.api import Backoff
from spendwatch.collectors.aws.cost_explorer import CostExplorerConfig
from spendwatch.collectors.aws.cur import DataExportConfig
from spendwatch.store import Store
from tests.doubles.aws_ce import ce_page
from tests.doubles.aws_cur import line, parquet_bytes, put_data_export
from tests.doubles.aws_faults import JSON_THROTTLING, S3_SLOW_DOWN, FaultProxy
from tests.doubles.clock import FixedClock

BUCKET, PREFIX = "billing-exports", "cur/cur2"
DATA_FILE = f"/{BUCKET}/{PREFIX}/data/BILLING_PERIOD=2026-11/a.parquet"


@pytest.fixture
def proxy(moto_server: Any) -> Iterator[FaultProxy]:
    faults = FaultProxy(moto_server.endpoint_url)
    yield faults
    faults.stop()


@pytest.fixture
def export(moto_server: Any) -> list[dict[str, Any]]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_server.endpoint_url, region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    rows = [line(datetime(2026, 11, 3, h, tzinfo=UTC), 1.5 * (h + 1)) for h in range(5)]
    put_data_export(s3, BUCKET, PREFIX, "2026-11", {"a.parquet": parquet_bytes(rows)})
    return rows


def data_export(proxy: FaultProxy, max_attempts: int) -> DataExportConfig:
    return DataExportConfig.model_validate(
        {
            "name": "cur",
            "bucket": BUCKET,
            "prefix": PREFIX,
            "backfill": "30d",
            "aws": {"region": "us-east-1", "endpoint_url": proxy.endpoint_url, "max_attempts": max_attempts},
        }
    )


def is_data_file(method: str, path: str, _: str) -> bool:
    return method == "GET" and unquote(path.split("?", maxsplit=1)[0]) == DATA_FILE


def is_listing(method: str, path: str, _: str) -> bool:
    return method == "GET" and "list-type=2" in path


def test_botocore_retries_a_slow_down_within_one_call(
    proxy: FaultProxy,
    export: list[dict[str, Any]],
    store: Store,
    clock: FixedClock,
    clients: dict[str, Any],
    sleeps: list[float],
) -> None:
    proxy.fail(is_data_file, S3_SLOW_DOWN, times=2)

    run = collect_source(data_export(proxy, max_attempts=3), store, clock, clients=clients)

    assert run.ok, run.error or run.problems
    assert proxy.attempts(is_data_file) == [(1, 503), (2, 503), (3, 200)]  # botocore's attempts 1-3
    assert sleeps == [] and "aws_retries" not in run.counters  # spendwatch's own layer was not needed
    assert store.query("SELECT sum(billed_cost) FROM cost_lines")[0][0] == sum(
        r["line_item_unblended_cost"] for r in export
    )


def test_spendwatch_backs_off_and_calls_again_when_botocore_gives_up(
    moto_server: Any, proxy: FaultProxy, store: Store, clock: FixedClock, clients: dict[str, Any], sleeps: list[float]
) -> None:
    def cost_and_usage(method: str, _: str, target: str) -> bool:
        return target.endswith(".GetCostAndUsage")

    proxy.fail(cost_and_usage, JSON_THROTTLING, times=3)
    usage = ce_page([("2026-11-19", "2026-11-20", [(["111111111111", "Amazon SageMaker"], 30.0, 30.0)], False)])
    charges = ce_page([("2026-11-19", "2026-11-20", [(["111111111111", "Tax"], 3.0, 3.0)], False)])
    moto_server.seed_cost_explorer([usage, charges])
    config = CostExplorerConfig.model_validate(
        {
            "name": "ce",
            "backfill": "1d",
            "aws": {"region": "us-east-1", "endpoint_url": proxy.endpoint_url, "max_attempts": 2},
        }
    )

    run = collect_source(config, store, clock, clients=clients)

    assert run.ok, run.error or run.problems
    # Call 1: botocore's attempts 1 and 2 throttled; spendwatch pauses once; call 2: attempt 1 throttled,
    # attempt 2 through; the second request passes at once.
    assert proxy.attempts(cost_and_usage) == [(1, 400), (2, 400), (1, 400), (2, 200), (1, 200)]
    assert len(sleeps) == 1 and run.counters["aws_retries"] == 1
    assert store.query("SELECT charge_category, billed_cost FROM cost_lines ORDER BY 1") == [
        ("Tax", 3.0),
        ("Usage", 30.0),
    ]


def test_throttling_that_never_ends_is_one_line_and_nothing_is_stored(
    proxy: FaultProxy, export: list[dict[str, Any]], store: Store, clock: FixedClock, clients: dict[str, Any]
) -> None:
    proxy.fail(is_listing, S3_SLOW_DOWN, times=1000)
    paused: list[float] = []
    patient = {**clients, "aws_backoff": Backoff(attempts=2, sleep=paused.append)}

    run = collect_source(data_export(proxy, max_attempts=2), store, clock, clients=patient)

    assert run.error == (
        "source cur: s3 ListObjectsV2 still failing after 2 attempts: SlowDown: Please reduce your request rate."
    )
    assert proxy.attempts(is_listing) == [(1, 503), (2, 503)] * 2  # spendwatch's 2 calls x botocore's 2 attempts
    assert len(paused) == 1
    assert store.query("SELECT count(*) FROM cost_lines") == [(0,)]
