"""Builders for kill-switch tests: settings, incidents, job records, a store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from spendwatch.connections import AwsConnection, GcpConnection
from spendwatch.killswitch.config import KillSwitchConfig
from spendwatch.killswitch.rules import JobRecord
from spendwatch.store import Store
from spendwatch.store.records import Contributor, Incident, JobLink

ACCOUNT = "123456789012"
REGION = "us-east-1"
NOW = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)


def settings(
    rules: list[dict[str, Any]], *, endpoint: str | None = None, gcp: str | None = None, **extra: Any
) -> KillSwitchConfig:
    # The people the kill-switch tests approve and reject as (an approve rule needs approvers).
    data: dict[str, Any] = {"rules": rules, "approvers": ["lead", "ana"], **extra}
    if endpoint is not None:
        data["aws"] = AwsConnection(region=REGION, endpoint_url=endpoint, max_attempts=1)
    if gcp is not None:
        apis = ("bigquery", "compute", "dataproc", "container", "aiplatform", "cloudbilling", "cloudresourcemanager")
        data["gcp"] = GcpConnection(project="proj-a", anonymous=True, endpoints=dict.fromkeys(apis, gcp))
    return KillSwitchConfig.model_validate(data)


def rule(
    name: str = "r", *, do: str = "stop", how: str = "enforce", when: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    return {"name": name, "do": do, "how": how, "when": when or {"incident": {}}, **extra}


def incident(
    resource_ids: list[str] = (),  # type: ignore[assignment]
    *,
    incident_id: int = 1,
    provider: str = "aws",
    account: str = ACCOUNT,
    region: str = REGION,
    severity: str = "high",
    impact: float = 480.0,
    jobs: tuple[JobLink, ...] = (),
    kind: str = "spike",
    owner: str | None = None,
) -> Incident:
    dims = {"provider": provider, "sub_account_id": account, "region_id": region}
    if owner:
        dims["owner"] = owner
    share = 1.0 / max(len(resource_ids), 1)
    return Incident(
        id=incident_id,
        monitor="account-service",
        granularity="daily",
        series_key="|".join(dims.values()),
        dimensions=dims,
        billing_currency="USD",
        kind=kind,
        status="open",
        severity=severity,
        first_seen=NOW - timedelta(days=1),
        last_seen=NOW - timedelta(days=1),
        resolved_at=None,
        peak_at=NOW - timedelta(days=1),
        peak_actual=impact + 100,
        peak_expected=100.0,
        peak_score=9.0,
        actual_total=impact + 100,
        expected_total=100.0,
        impact=impact,
        impact_pct=impact / 100.0,
        contributors=tuple(
            Contributor("resource_id", rid, impact * share, share, impact * share, 0.0) for rid in resource_ids
        ),
        jobs=jobs,
    )


def job(
    platform: str,
    job_id: str,
    *,
    account: str = ACCOUNT,
    region: str = REGION,
    state: str = "RUNNING",
    estimated: float = 50.0,
    projected: float | None = 400.0,
    owner: str | None = "ana",
    name: str | None = None,
    resource_id: str | None = None,
    labels: dict[str, str] | None = None,
    provider: str = "aws",
) -> JobRecord:
    return JobRecord(
        platform=platform,
        job_id=job_id,
        provider=provider,
        sub_account_id=account,
        region_id=region,
        name=name,
        user=owner,
        owner=owner,
        state=state,
        start_time=NOW - timedelta(hours=2),
        estimated_cost=estimated,
        projected_cost=projected,
        billing_currency="USD",
        resource_id=resource_id,
        labels=labels or {},
    )


def new_store(path: Path, clock: Any) -> Store:
    store = Store(path / "sw.duckdb", clock=clock)
    store.migrate()
    return store
