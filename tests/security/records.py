"""Incidents, job links and journaled actions whose every data string is one hostile string."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from spendwatch.killswitch.base import Target
from spendwatch.killswitch.config import KillSwitchConfig
from spendwatch.killswitch.journal import ActionRecord
from spendwatch.store import Store
from spendwatch.store.records import Contributor, Incident, JobLink, SeriesPoint, to_json
from spendwatch.store.schema import TAGS_TYPE
from tests.doubles.lines import cost_lines

NOW = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)


def hostile_link(text: str) -> JobLink:
    return JobLink(
        platform="bigquery", job_id=f"bquxjob_{text}", provider="gcp", sub_account_id=text, user=text, name=text,
        state="RUNNING", cost=900.0, cost_method="bytes", start_time=NOW - timedelta(hours=3), end_time=None,
        query_text=f"SELECT '{text}'", resource_id=text, region_id=text, labels={text: text, "team": text},
    )  # fmt: skip


def hostile_incident(text: str, *, currency: str | None = None, incident_id: int = 1) -> Incident:
    """Every dimension, contributor, job field and the currency carry ``text``."""
    first = NOW - timedelta(days=1)
    points = tuple(
        SeriesPoint(at=first - timedelta(days=k), actual=100.0 + k, expected=100.0, lower=80.0, upper=120.0,
                    is_anomaly=k == 0)
        for k in range(10, -1, -1)
    )  # fmt: skip
    return Incident(
        id=incident_id, monitor="svc", granularity="daily", series_key=text,
        dimensions={"provider": "gcp", "sub_account_id": text, "service_name": text, "owner": text},
        billing_currency=currency if currency is not None else text, kind="spike", status="open", severity="critical",
        first_seen=first, last_seen=first, resolved_at=None, peak_at=first, peak_actual=1100.0, peak_expected=100.0,
        peak_score=9.0, actual_total=1100.0, expected_total=100.0, impact=1000.0, impact_pct=10.0,
        contributors=(Contributor("owner", text, 900.0, 0.9, 900.0, 0.0),
                      Contributor("resource_id", text, 100.0, 0.1, 100.0, 0.0)),
        jobs=(hostile_link(text),), points=points,
    )  # fmt: skip


def hostile_action(text: str, *, state: str = "awaiting-approval", action_id: int = 1) -> ActionRecord:
    target = Target(
        provider="gcp", resource_type="bigquery-job", resource_id=text, account=text, region=text, owner=text,
        labels={text: text}, name=text, state="RUNNING", saving_per_hour=12.5, at_stake=300.0, currency=text,
        origin="incident-job",
    )  # fmt: skip
    return ActionRecord(
        id=action_id, idempotency_key=text, rule=text, anomaly_id=1, verb="cancel", mode="approve", state=state,
        target=target, reason=text, saving_per_hour=12.5, at_stake=300.0, reversible=False, plan={"context": text},
        prior_state=None, result={"summary": text}, error=text, planned_at=NOW, expires_at=None, decided_at=None,
        decided_by=text, started_at=None, finished_at=None, undone_at=None, notified_state=None, updated_at=NOW,
    )  # fmt: skip


def store_incident(store: Store, incident: Incident) -> int:
    """Write ``incident`` as detection would (same columns and JSON), returning its id."""
    row: dict[str, Any] = {
        "monitor": incident.monitor, "granularity": incident.granularity, "series_key": incident.series_key,
        "dimensions": json.dumps(incident.dimensions), "billing_currency": incident.billing_currency,
        "kind": incident.kind, "status": incident.status, "severity": incident.severity,
        "first_seen": incident.first_seen, "last_seen": incident.last_seen, "peak_at": incident.peak_at,
        "peak_actual": incident.peak_actual, "peak_expected": incident.peak_expected,
        "peak_score": incident.peak_score, "actual_total": incident.actual_total,
        "expected_total": incident.expected_total, "impact": incident.impact, "impact_pct": incident.impact_pct,
        "contributors": to_json(list(incident.contributors)), "jobs": to_json(list(incident.jobs)),
        "points": to_json(list(incident.points)), "created_at": NOW, "updated_at": NOW,
    }  # fmt: skip
    with store.transaction() as con:
        found = con.execute(
            f"INSERT INTO anomalies ({', '.join(row)}) VALUES ({', '.join('?' * len(row))}) RETURNING id",
            list(row.values()),
        ).fetchone()
    assert found is not None
    return int(found[0])


def hostile_settings(text: str) -> KillSwitchConfig:
    """Dry-run hook rules that journal an action per hostile target (the hook is never run)."""
    return KillSwitchConfig.model_validate(
        {
            "approvers": ["lead"],
            "rules": [
                {"name": "page", "when": {"incident": {}}, "do": "hook", "how": "dry-run", "max_targets": 100,
                 "hook": {"command": ["/bin/true"]}, "description": text},
                {"name": "ask", "when": {"incident": {}}, "do": "hook", "how": "approve", "max_targets": 100,
                 "hook": {"url": "https://hooks.example.com/x"}},
            ],
        }
    )  # fmt: skip


TEXT_FIELDS = ("billing_account_id", "sub_account_id", "sub_account_name", "service_name", "service_category",
               "sku_id", "region_id", "resource_id", "resource_name", "charge_description", "owner", "job_id")  # fmt: skip


def hostile_cost_lines(text: str, day: datetime, *, currency: str = "USD") -> pa.Table:
    """A credit whose every text column (and a tag key and value) is ``text``, and a plain usage line."""
    rows = [
        {"start": day, "cost": -3.5, "charge_category": "Credit", "billing_currency": currency,
         **dict.fromkeys(TEXT_FIELDS, text)},
        {"start": day, "cost": 812.25, "billing_currency": currency, "sub_account_id": text, "owner": text,
         "service_name": "Amazon EC2"},
    ]  # fmt: skip
    table = cost_lines(rows)
    tags = pa.array([[(text, text), ("team", text)], None], type=TAGS_TYPE)
    return table.set_column(table.schema.get_field_index("tags"), "tags", tags)
