"""Hole 4: a forged manifest cannot make aws-data-export read files outside its bucket and prefix.

The collector trusted the newest manifest under the prefix, and a manifest's ``dataFiles`` (or a
legacy manifest's ``bucket``) may name any bucket: whoever could write one manifest could feed the
store another bucket's bill (or any object the collector's role can read). Only files under the
configured bucket and prefix are read; a manifest naming others is refused with one line.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from spendwatch.collect import collect_source
from spendwatch.collectors.aws.cur import data_keys
from spendwatch.errors import InputError
from spendwatch.store import Store
from tests.collectors.aws.test_data_export import BUCKET, PREFIX, by_account_category, config, november_rows
from tests.doubles.aws_calls import CallLog
from tests.doubles.aws_cur import parquet_bytes, put_data_export, put_legacy_cur
from tests.doubles.clock import FixedClock

OTHER = "someone-elses-bucket"
MANIFEST = f"{PREFIX}/metadata/BILLING_PERIOD=2026-11/cur2-Manifest.json"


@pytest.fixture
def s3(moto_server: Any) -> Any:
    import boto3

    client = boto3.client("s3", endpoint_url=moto_server.endpoint_url, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    return client


def _forged(s3: Any, uris: list[str]) -> None:
    manifest = {"dataFiles": uris, "billingPeriod": {"start": "2026-11-01T00:00:00.000Z"}}
    put_data_export(s3, BUCKET, PREFIX, "2026-11", {}, manifest=json.dumps(manifest).encode())


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        (f"s3://{OTHER}/{PREFIX}/data/a.parquet", f"not in the export bucket {BUCKET}"),
        (f"s3://{BUCKET}/payroll/2026-11/a.parquet", f"not under s3://{BUCKET}/{PREFIX}/"),
        (f"s3://{BUCKET}/{PREFIX}-evil/data/a.parquet", f"not under s3://{BUCKET}/{PREFIX}/"),
        (f"s3://{BUCKET}/{PREFIX}/../payroll/a.parquet", "a '.' or '..' path segment"),
    ],
)
def test_a_manifest_naming_files_outside_bucket_and_prefix_is_refused(
    moto_server: Any, s3: Any, store: Store, clock: FixedClock, clients: dict[str, Any], call_log: CallLog,
    uri: str, why: str,
) -> None:  # fmt: skip
    s3.create_bucket(Bucket=OTHER)
    target_bucket, _, target_key = uri[len("s3://") :].partition("/")
    s3.put_object(Bucket=target_bucket, Key=target_key, Body=parquet_bytes(november_rows()))
    _forged(s3, [uri])

    run = collect_source(config(moto_server), store, clock, clients=clients)

    [problem] = run.problems
    assert problem.startswith(f"cur 2026-11: s3://{BUCKET}/{MANIFEST}: manifest lists {uri}: {why}")
    assert "\n" not in problem
    assert by_account_category(store) == {}
    read = [(p["Bucket"], p["Key"]) for p in call_log.operations("s3", "GetObject")]
    assert read == [(BUCKET, MANIFEST)]  # the manifest, and nothing it pointed at


def test_a_legacy_manifest_naming_another_bucket_is_refused(
    moto_server: Any, s3: Any, store: Store, clock: FixedClock, clients: dict[str, Any], call_log: CallLog
) -> None:
    s3.create_bucket(Bucket=OTHER)
    start, end = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
    key = put_legacy_cur(s3, BUCKET, PREFIX, start, end, b"identity/LineItemId\n")
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    manifest["bucket"] = OTHER
    s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(manifest).encode())

    run = collect_source(config(moto_server), store, clock, clients=clients)

    [problem] = run.problems
    assert f"not in the export bucket {BUCKET}" in problem
    assert all(p["Bucket"] == BUCKET for p in call_log.operations("s3", "GetObject"))


def test_files_under_the_prefix_still_load(
    moto_server: Any, s3: Any, store: Store, clock: FixedClock, clients: dict[str, Any]
) -> None:
    put_data_export(s3, BUCKET, PREFIX, "2026-11", {"a.parquet": parquet_bytes(november_rows())})
    run = collect_source(config(moto_server), store, clock, clients=clients)
    assert run.ok and run.problems == [] and by_account_category(store) != {}


def test_data_keys_checks_the_scope_itself() -> None:
    body = json.dumps({"dataFiles": [f"s3://{OTHER}/x.parquet"]}).encode()
    with pytest.raises(InputError, match=f"not in the export bucket {BUCKET}"):
        data_keys(body, BUCKET, f"{PREFIX}/metadata/BILLING_PERIOD=2026-11/m-Manifest.json", prefix=PREFIX)
    legit = json.dumps({"dataFiles": [f"s3://{BUCKET}/{PREFIX}/data/x.parquet"]}).encode()
    assert data_keys(legit, BUCKET, "k", prefix=PREFIX) == [(BUCKET, f"{PREFIX}/data/x.parquet")]
    assert data_keys(legit, BUCKET, "k", prefix="") == [(BUCKET, f"{PREFIX}/data/x.parquet")]
