"""Our billing-export SQL executed by a real SQL engine (bqemulator) over a billing-export-shaped table.

The fake-API tests prove the requests; this proves the aggregation: labels picked out of the
repeated ``labels`` record, credits summed per row, cost types kept apart, the time window and the
partition filter accepted, all read back through the real BigQuery client.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from spendwatch.collect import collect_source
from spendwatch.store import Store
from tests.collectors.gcp.export_fixtures import DETAILED_SCHEMA, export_config
from tests.doubles.bqemulator import Emulator, bqemulator  # noqa: F401  (fixture)
from tests.doubles.clock import FixedClock

_tables = itertools.count(1)


def _client(emulator: Emulator) -> Any:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    return bigquery.Client(
        project=emulator.project,
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": emulator.endpoint},
    )


def _export_row(
    start: datetime,
    project: str,
    service: str,
    cost: float,
    *,
    credits: list[float] = (),  # type: ignore[assignment]
    labels: dict[str, str] | None = None,
    cost_type: str = "regular",
    resource: str | None = None,
) -> dict[str, Any]:
    return {
        "billing_account_id": "0A1B2C-3D4E5F-6A7B8C",
        "service": {"id": f"svc-{service}", "description": service},
        "sku": {"id": "sku-1", "description": f"{service} usage"},
        "usage_start_time": start.isoformat(),
        "usage_end_time": (start + timedelta(hours=1)).isoformat(),
        "project": {
            "id": project,
            "number": "123",
            "name": project.title(),
            "labels": [{"key": "cost-center", "value": f"cc-{project}"}],
        },
        "labels": [{"key": k, "value": v} for k, v in (labels or {}).items()],
        "location": {"location": "us-central1", "country": "US", "region": "us-central1", "zone": None},
        "export_time": (start + timedelta(hours=5)).isoformat(),
        "cost": cost,
        "currency": "USD",
        "credits": [{"name": "CUD", "amount": a, "type": "COMMITTED_USAGE_DISCOUNT"} for a in credits],
        "cost_type": cost_type,
        "cost_at_list": cost * 1.25,
        "resource": {"name": resource, "global_name": f"//compute/{resource}" if resource else None},
    }


@pytest.fixture
def export_table(bqemulator: Emulator) -> str:  # noqa: F811
    from google.cloud import bigquery

    client = _client(bqemulator)
    client.create_dataset("billing_export", exists_ok=True)
    path = f"{bqemulator.project}.billing_export.gcp_billing_export_resource_v1_0A1B2C_{next(_tables):06d}"
    table = bigquery.Table(path, schema=[bigquery.SchemaField.from_api_repr(f) for f in DETAILED_SCHEMA])
    table.time_partitioning = bigquery.TimePartitioning(type_=bigquery.TimePartitioningType.DAY)
    client.create_table(table)
    return path


def test_the_aggregation_runs_on_a_real_engine(bqemulator: Emulator, export_table: str, tmp_path: Path) -> None:  # noqa: F811
    now = datetime.now(UTC).replace(minute=30, second=0, microsecond=0)
    # Two days back, so every row (the latest is 26 h after ``day``) is in the past at any hour of today.
    day = now.replace(hour=0, minute=0) - timedelta(days=2)
    rows = [
        _export_row(
            day + timedelta(hours=1),
            "ml",
            "Compute Engine",
            10.0,
            credits=[-1.0, -0.5],
            labels={"owner": "ben", "team": "ml"},
            resource="vm-1",
        ),
        _export_row(
            day + timedelta(hours=1),
            "ml",
            "Compute Engine",
            5.0,
            credits=[-2.0],
            labels={"owner": "ben", "team": "ml"},
            resource="vm-1",
        ),
        _export_row(day + timedelta(hours=1), "ml", "Compute Engine", 7.0, labels={"owner": "cho"}, resource="vm-2"),
        _export_row(day + timedelta(hours=2), "ml", "Compute Engine", 3.0, labels={"team": "ml"}, resource="vm-1"),
        _export_row(day + timedelta(hours=2), "bi", "BigQuery", 20.0, labels={"owner": "dana"}),
        _export_row(day + timedelta(hours=2), "bi", "BigQuery", 1.5, cost_type="tax"),
        _export_row(day + timedelta(hours=26), "bi", "BigQuery", 4.0, labels={"owner": "dana"}),
        # Outside the collected window (older than the backfill): must not be counted.
        _export_row(day - timedelta(days=30), "bi", "BigQuery", 999.0, labels={"owner": "dana"}),
    ]
    errors = _client(bqemulator).insert_rows_json(export_table, rows)
    assert errors == []

    clock = FixedClock(now)
    store = Store(tmp_path / "store.duckdb", clock=clock)
    config = export_config(
        bqemulator.endpoint,
        table=export_table,
        gcp={"project": bqemulator.project, "anonymous": True, "endpoints": {"bigquery": bqemulator.endpoint}},
        backfill="3d",
        project_label_keys=["cost-center"],
    )
    run = collect_source(config, store, clock)
    assert run.error is None, run.error

    got = store.query(
        "SELECT charge_period_start, sub_account_id, service_name, resource_name, owner, charge_category, "
        "billed_cost, list_cost, tags['team'], tags['project:cost-center'] FROM cost_lines"
    )
    expected: dict[tuple[Any, ...], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for row in rows[:-1]:
        start = datetime.fromisoformat(row["usage_start_time"])
        labels = {label["key"]: label["value"] for label in row["labels"]}
        category = {"regular": "Usage", "tax": "Tax"}[row["cost_type"]]
        key = (
            start,
            row["project"]["id"],
            row["service"]["description"],
            row["resource"]["name"],
            labels.get("owner"),
            category,
            labels.get("team"),
        )
        expected[key][0] += row["cost"]
        expected[key][1] += row["cost_at_list"]
        credit = sum(c["amount"] for c in row["credits"])
        if credit:
            expected[(*key[:5], "Credit", key[6])][0] += credit
    actual = {(r[0], r[1], r[2], r[3], r[4], r[5], r[8]): r[6] for r in got}
    assert actual == pytest.approx({k: v[0] for k, v in expected.items()})
    lists = {(r[0], r[1], r[3], r[4], r[5]): r[7] for r in got if r[5] == "Usage"}
    assert lists[(day + timedelta(hours=1), "ml", "vm-1", "ben", "Usage")] == pytest.approx(18.75)
    assert {r[9] for r in got} == {"cc-ml", "cc-bi"}
    total = sum(r[6] for r in got)
    assert total == pytest.approx(10 + 5 + 7 + 3 + 20 + 1.5 + 4 - 3.5)
