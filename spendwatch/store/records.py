"""Typed records passed between detection, the kill switch and notifications.

Cost lines and job records travel as Arrow tables (see ``schema``); these are the small, rich records
people read: incidents and their culprits.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

IncidentStatus = Literal["open", "ongoing", "resolved", "acknowledged", "expected", "withdrawn", "reported"]
IncidentKind = Literal["spike", "shift", "leak", "burst", "guard", "drop"]
Severity = Literal["low", "medium", "high", "critical"]

ALERTING_STATUSES: frozenset[str] = frozenset({"open", "ongoing"})
INCIDENT_STATUSES = ("open", "ongoing", "resolved", "acknowledged", "expected", "withdrawn", "reported")
SEVERITY_ORDER: tuple[Severity, ...] = ("low", "medium", "high", "critical")
# A job is named as the culprit when it explains at least this share of the incident's excess.
JOB_EXPLAINS_SHARE = 0.25
CULPRIT_PREFERENCE = ("owner", "resource_id", "job_id", "sub_account_id", "service_name", "region_id")


@dataclass(frozen=True)
class Contributor:
    """One child dimension value's share of an incident's excess over expected."""

    dimension: str
    value: str
    delta: float
    share: float
    actual: float
    expected: float


@dataclass(frozen=True)
class JobLink:
    """A job record that explains (part of) an incident: the query, the training job …"""

    platform: str
    job_id: str
    provider: str
    sub_account_id: str | None
    user: str | None
    name: str | None
    state: str
    cost: float
    cost_method: str | None
    start_time: datetime | None
    end_time: datetime | None
    query_text: str | None = None
    resource_id: str | None = None
    region_id: str | None = None
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def what(self) -> str:
        """How a person names it: ``query``, ``sagemaker job``, ``Kubernetes Job``."""
        if self.platform == "kubernetes":
            return f"Kubernetes {self.labels.get('k8s:kind', 'workload')}"
        return {"bigquery": "query", "athena": "query"}.get(self.platform, f"{self.platform} job")

    @property
    def where(self) -> str | None:
        """Where it ran: the account/project, or a workload's cluster/namespace."""
        if self.platform == "kubernetes":
            place = "/".join(v for v in (self.labels.get("k8s:cluster"), self.labels.get("k8s:namespace")) if v)
            if place:
                return place
        return self.sub_account_id

    def sentence(self, currency: str) -> str:
        """``user X's query Y in project Z cost $N``: who ran what, where, for how much."""
        from spendwatch.money import format_money

        who = self.user or "an unknown principal"
        where = f" in {self.where}" if self.where else ""
        return f"{who}'s {self.what} {self.name or self.job_id}{where} cost {format_money(self.cost, currency)}"


@dataclass(frozen=True)
class SeriesPoint:
    """One step of a series around an incident, for the digest chart."""

    at: datetime
    actual: float
    expected: float
    lower: float
    upper: float
    is_anomaly: bool


@dataclass(frozen=True)
class Incident:
    """Consecutive anomalous steps of one series: one alert, however many steps it lasts."""

    id: int
    monitor: str
    granularity: str
    series_key: str
    dimensions: dict[str, str]
    billing_currency: str
    kind: str
    status: str
    severity: str
    first_seen: datetime
    last_seen: datetime
    resolved_at: datetime | None
    peak_at: datetime
    peak_actual: float
    peak_expected: float
    peak_score: float
    actual_total: float
    expected_total: float
    impact: float
    impact_pct: float
    contributors: tuple[Contributor, ...] = ()
    jobs: tuple[JobLink, ...] = ()
    points: tuple[SeriesPoint, ...] = ()
    feedback: str | None = None
    feedback_by: str | None = None
    feedback_at: datetime | None = None
    feedback_note: str | None = None
    alerted_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def is_alerting(self) -> bool:
        """Open or ongoing, and not a drop (drops are reported, never alerted)."""
        return self.status in ALERTING_STATUSES and self.kind != "drop"

    @property
    def title(self) -> str:
        """``gcp / analytics-warehouse / BigQuery`` — the series in words."""
        values = [v for v in self.dimensions.values() if v]
        return " / ".join(values) if values else self.monitor

    def top_job(self) -> JobLink | None:
        return self.jobs[0] if self.jobs else None

    def culprit_sentence(self) -> str:
        """``user X's query Y in project Z cost $N`` when a job explains it, else the telling contributor.

        A contributor's dollars are its share of *this incident's* excess (``share_of_impact``), so the
        sentence agrees with the impact printed beside it; attribution's own baseline (the median of
        the four cycles before) can differ from the detector's expected, and two baselines in one
        card read as two different incidents.
        """
        from spendwatch.money import format_money, format_share

        currency = self.billing_currency
        job = self.top_job()
        if job is not None and job.cost >= JOB_EXPLAINS_SHARE * self.impact:
            return job.sentence(currency)
        top = self.top_contributor()
        if top is not None:
            delta = format_money(self.share_of_impact(top), currency, signed=True)
            share = format_share(top.share)
            return f"{top.dimension.replace('_', ' ')} {top.value} accounts for {share} of the excess ({delta})"
        if self.impact < 0:
            return f"{self.title} is {format_money(-self.impact, currency)} below expected"
        baseline = "over its cap" if self.kind == "guard" else "over expected"
        return f"{self.title} is {format_money(self.impact, currency)} {baseline}"

    def share_of_impact(self, contributor: Contributor) -> float:
        """The contributor's part of this incident's impact (its share × the impact)."""
        return contributor.share * self.impact

    def top_contributor(self) -> Contributor | None:
        """The most telling contributor: a named value (not ``(none)``) holding most of the excess, by
        preference a person, then a resource or job, then an account, service or region."""
        named = [c for c in self.contributors if c.value != "(none)"]
        for dimension in CULPRIT_PREFERENCE:
            for contributor in named:
                if contributor.dimension == dimension and contributor.share >= 0.5:
                    return contributor
        return max(named, key=lambda c: c.delta, default=None)


def to_json(value: Any) -> str:
    """JSON for records stored in text columns (dataclasses, datetimes)."""

    def default(item: Any) -> Any:
        if isinstance(item, datetime):
            return item.isoformat()
        if hasattr(item, "__dataclass_fields__"):
            return asdict(item)
        raise TypeError(f"cannot serialise {type(item).__name__}")

    return json.dumps(value, default=default, sort_keys=True)


def _parse_time(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def contributors_from_json(text: str) -> tuple[Contributor, ...]:
    return tuple(Contributor(**item) for item in json.loads(text or "[]"))


def jobs_from_json(text: str) -> tuple[JobLink, ...]:
    links = []
    for item in json.loads(text or "[]"):
        item["start_time"] = _parse_time(item.get("start_time"))
        item["end_time"] = _parse_time(item.get("end_time"))
        links.append(JobLink(**item))
    return tuple(links)


def points_from_json(text: str) -> tuple[SeriesPoint, ...]:
    points = []
    for item in json.loads(text or "[]"):
        item["at"] = _parse_time(item["at"])
        points.append(SeriesPoint(**item))
    return tuple(points)


def labels_dict(value: Any) -> dict[str, str]:
    """A DuckDB MAP as Python sees it (a dict, or {'key': [...], 'value': [...]}) → dict."""
    if value is None:
        return {}
    if isinstance(value, dict) and set(value) == {"key", "value"} and isinstance(value.get("key"), list):
        return {str(k): str(v) for k, v in zip(value["key"], value["value"], strict=False)}
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    return {str(k): str(v) for k, v in value}
