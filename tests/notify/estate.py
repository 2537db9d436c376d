"""A store holding the simulated estate after collection and detection (built once, copied per test)."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from spendwatch.config import Config, parse_config
from spendwatch.store import Store
from tests.doubles.clock import FixedClock

NOW = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)  # a Friday; the digest of the 20th reports on the 19th


def write_config(folder: Path, **sections: Any) -> Path:
    """A config file in ``folder`` with the simulated source (ending at ``NOW``) and the given sections."""
    data: dict[str, Any] = {
        "store": {"path": "store.duckdb"},
        "sources": [
            {"name": "demo-estate", "type": "simulated", "days": 60, "end": NOW.isoformat(), "settle_lag": "1h"}
        ],
        **sections,
    }
    path = folder / "spendwatch.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def load(path: Path, environ: dict[str, str] | None = None) -> Config:
    return parse_config(path.read_text(), path, environ=environ or {})


def build_estate(folder: Path) -> Path:
    """Collect the simulated estate and run detection; returns the store file."""
    from spendwatch.collect import collect_source
    from spendwatch.detect.runner import run_detection

    config = load(write_config(folder))
    clock = FixedClock(NOW)
    store = Store(config.store.path, clock=clock)
    run = collect_source(config.sources[0], store, clock)
    assert run.error is None, run.error
    run_detection(config, store, clock)
    return config.store.path


def copy_store(source: Path, folder: Path) -> Path:
    target = folder / "store.duckdb"
    shutil.copy(source, target)
    return target


def insert_incident(store: Store, **overrides: Any) -> int:
    """Insert one incident row directly (for hostile labels and exact figures)."""
    now = overrides.pop("now", NOW)
    points = [
        {
            "at": (now - timedelta(days=10 - k)).isoformat(),
            "actual": 100.0 + (900.0 if k == 9 else 0.0),
            "expected": 100.0,
            "lower": 80.0,
            "upper": 120.0,
            "is_anomaly": k == 9,
        }
        for k in range(10)
    ]
    row: dict[str, Any] = {
        "monitor": "account-service",
        "granularity": "daily",
        "series_key": "aws|111111111111|Amazon EC2",
        "dimensions": json.dumps({"provider": "aws", "sub_account_id": "111111111111", "service_name": "Amazon EC2"}),
        "billing_currency": "USD",
        "kind": "spike",
        "status": "open",
        "severity": "high",
        "first_seen": now - timedelta(days=1),
        "last_seen": now - timedelta(days=1),
        "peak_at": now - timedelta(days=1),
        "peak_actual": 1000.0,
        "peak_expected": 100.0,
        "peak_score": 9.0,
        "actual_total": 1000.0,
        "expected_total": 100.0,
        "impact": 900.0,
        "impact_pct": 9.0,
        "contributors": "[]",
        "jobs": "[]",
        "points": json.dumps(points),
        "created_at": now,
        "updated_at": now,
    }
    row.update(overrides)
    columns = ", ".join(row)
    with store.transaction() as con:
        found = con.execute(
            f"INSERT INTO anomalies ({columns}) VALUES ({', '.join('?' * len(row))}) RETURNING id", list(row.values())
        ).fetchone()
    assert found is not None
    return int(found[0])


def job_link(**overrides: Any) -> dict[str, Any]:
    link: dict[str, Any] = {
        "platform": "bigquery",
        "job_id": "bquxjob_evil",
        "provider": "gcp",
        "sub_account_id": "analytics-warehouse",
        "user": "mallory@example.com",
        "name": "<script>alert('x')</script>",
        "state": "DONE",
        "cost": 812.5,
        "cost_method": "bytes_billed",
        "start_time": None,
        "end_time": None,
        "query_text": "SELECT '<img src=x onerror=alert(1)>' FROM t",
        "resource_id": None,
        "region_id": "US",
        "labels": {},
    }
    link.update(overrides)
    return link
