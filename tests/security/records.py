"""Incidents, job links and journaled actions whose every data string is one hostile string."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from spendwatch.killswitch.base import Target
from spendwatch.killswitch.journal import ActionRecord
from spendwatch.records import Contributor, Incident, JobLink, SeriesPoint

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
