"""GKE cost allocation through ``gcp-billing-export``: the real SQL on a real engine (bqemulator) over a
billing-export table whose rows carry the labels GKE adds to a cluster's pods."""

from __future__ import annotations

import itertools
import random
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
WORKLOADS = [  # namespace, job-name label (None: a Deployment labelled app), owner label, team label, $/h
    ("research", "llm-pretrain-fatima", "fatima.zahra@example.com", "ml-research", 65.0),
    ("research", None, None, "ml-research", 4.0),
    ("serving", None, "nina.costa@example.com", "serving", 7.5),
]


def _row(start: datetime, cost: float, labels: dict[str, str], credit: float = 0.0) -> dict[str, Any]:
    return {
        "billing_account_id": "0A1B2C-3D4E5F-6A7B8C",
        "service": {"id": "6F81-5844-456A", "description": "Compute Engine"},
        "sku": {"id": "sku-a2", "description": "A2 Instance Core running in Americas"},
        "usage_start_time": start.isoformat(),
        "usage_end_time": (start + timedelta(hours=1)).isoformat(),
        "project": {"id": "ml-gke-research", "number": "42", "name": "ML GKE Research", "labels": []},
        "labels": [{"key": k, "value": v} for k, v in labels.items()],
        "location": {"location": "us-central1", "country": "US", "region": "us-central1", "zone": None},
        "export_time": (start + timedelta(hours=5)).isoformat(),
        "cost": cost,
        "currency": "USD",
        "credits": [{"name": "SUD", "amount": credit, "type": "SUSTAINED_USAGE_DISCOUNT"}] if credit else [],
        "cost_type": "regular",
        "cost_at_list": cost,
        "resource": {"name": "gke-research-a2-pool-1", "global_name": "//compute/gke-research-a2-pool-1"},
    }


def _pod_labels(namespace: str, job: str | None, owner: str | None, team: str) -> dict[str, str]:
    labels = {"goog-k8s-cluster-name": "gke-research", "goog-k8s-cluster-location": "us-central1",
              "goog-k8s-node-pool-name": "a2-pool", "k8s-namespace": namespace, "k8s-label/team": team}  # fmt: skip
    if job:
        labels["k8s-label/batch.kubernetes.io/job-name"] = job
    else:
        labels["k8s-label/app"] = "ranker" if namespace == "serving" else "jupyter"
    if owner:
        labels["k8s-label/owner"] = owner
    return labels


def test_gke_rows_become_workload_lines_with_owners_and_the_exports_own_total(
    bqemulator: Emulator,  # noqa: F811
    tmp_path: Path,
) -> None:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    client = bigquery.Client(
        project=bqemulator.project,
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": bqemulator.endpoint},
    )
    client.create_dataset("billing_export", exists_ok=True)
    table = f"{bqemulator.project}.billing_export.gcp_billing_export_resource_v1_0A1B2C_{next(_tables):06d}_gke"
    schema = [bigquery.SchemaField.from_api_repr(f) for f in DETAILED_SCHEMA]
    created = bigquery.Table(table, schema=schema)
    created.time_partitioning = bigquery.TimePartitioning(type_=bigquery.TimePartitioningType.DAY)
    client.create_table(created)
    now = datetime.now(UTC).replace(minute=30, second=0, microsecond=0)
    day = now.replace(hour=0, minute=0) - timedelta(days=1)
    rng = random.Random(16)
    rows = []
    for hour in range(6):
        for namespace, job, owner, team, rate in WORKLOADS:
            cost = round(rate * rng.uniform(0.9, 1.1), 4)
            rows.append(_row(day + timedelta(hours=hour), cost, _pod_labels(namespace, job, owner, team), -0.1 * cost))
        # The node pool's unallocated capacity and a non-Kubernetes VM: no k8s-namespace label.
        rows.append(_row(day + timedelta(hours=hour), 3.0, {"goog-k8s-cluster-name": "gke-research"}))
        rows.append(_row(day + timedelta(hours=hour), 2.0, {"owner": "divya.rao@example.com"}))
    assert client.insert_rows_json(table, rows) == []

    clock = FixedClock(now)
    store = Store(tmp_path / "store.duckdb", clock=clock)
    config = export_config(
        bqemulator.endpoint,
        table=table,
        gcp={"project": bqemulator.project, "anonymous": True, "endpoints": {"bigquery": bqemulator.endpoint}},
        backfill="3d",
        kubernetes={"keep_labels": ["team"]},
    )
    run = collect_source(config, store, clock)
    assert run.error is None, run.error

    [(total,)] = store.query("SELECT sum(billed_cost) FROM cost_lines")
    fixture = sum(r["cost"] + sum(c["amount"] for c in r["credits"]) for r in rows)
    assert total == pytest.approx(fixture, abs=1e-6)  # the export's own sum, credits included
    got = {
        (cluster, namespace, workload, owner): round(cost, 4)
        for cluster, namespace, workload, owner, cost in store.query(
            "SELECT k8s_cluster, k8s_namespace, k8s_workload, owner, sum(billed_cost) FROM cost_lines "
            "WHERE charge_category = 'Usage' GROUP BY ALL"
        )
    }
    expected: dict[tuple[Any, ...], float] = {}
    for r in rows:
        labels = {x["key"]: x["value"] for x in r["labels"]}
        namespace = labels.get("k8s-namespace")
        key = (
            labels.get("goog-k8s-cluster-name") if namespace else None,
            namespace,
            (labels.get("k8s-label/batch.kubernetes.io/job-name") or labels.get("k8s-label/app"))
            if namespace
            else None,
            labels.get("k8s-label/owner") or labels.get("k8s-label/team") or labels.get("owner"),
        )
        expected[key] = round(expected.get(key, 0.0) + r["cost"], 4)
    assert got == pytest.approx(expected)
    assert ("gke-research", "research", "llm-pretrain-fatima", "fatima.zahra@example.com") in got
    teams = dict(
        store.query(
            "SELECT tags['k8s-label/team'], count(*) FROM cost_lines WHERE k8s_namespace IS NOT NULL GROUP BY 1"
        )
    )
    assert set(teams) == {"ml-research", "serving"}  # monitors name it as label:team
