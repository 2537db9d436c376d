"""Guard breaches → incidents: one incident per breach, updated as it grows, resolved when it ends.

A breach is a running job over a per-job cap (cost so far, projected cost, run time), a user over
their daily cap, or a project over its burn-rate cap. Each is stored as an ``Incident`` of kind
``guard`` in the ``anomalies`` table, granularity ``realtime``, monitor ``guard:<guard name>``, with the
job(s) as ``JobLink``s — so the kill switch's incident rules, the immediate alerts and the digest
treat it like any other incident.

Deduplication: the series key names the limit and its subject (``job-cost|bigquery:p:US.job_1``).
Every poll that still sees the breach updates the same row (figures, severity — never lowered —, a
chart point, ``last_seen``); the kill switch journals one action per rule and incident, so one
breach is one cancel however many polls see it. A job incident is resolved once its job is no
longer running (its listing succeeded and it was not in it); a job seen again later reopens the
same incident rather than opening a second. Aggregate incidents resolve when the total falls below
the cap in a poll where every listing succeeded, and reopen within ``reopen_within``.
People's decisions win: an ``acknowledged`` or ``expected`` incident keeps that status.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from spendwatch.guard.config import PER_JOB_LIMITS, GuardConfig, severity_for
from spendwatch.guard.estimate import Estimate, job_key, labels_of, scope_of
from spendwatch.store import Connection, Store
from spendwatch.store.records import SEVERITY_ORDER, Contributor, JobLink, SeriesPoint, jobs_from_json, to_json
from spendwatch.store.schema import JOB_STATES_RUNNING

GRANULARITY = "realtime"
LIMIT_LABELS = {
    "job_cost": "job-cost",
    "job_projected_cost": "job-projected-cost",
    "max_runtime": "job-runtime",
    "user_daily_cost": "user-daily-cost",
    "project_burn_rate": "project-burn-rate",
}
JOB_LABELS = frozenset({"job-cost", "job-projected-cost", "job-runtime"})
ACTIVE = ("open", "ongoing", "acknowledged", "expected")
MAX_POINTS = 240
MAX_JOBS = 5


@dataclass(frozen=True)
class Breach:
    """One limit exceeded now, with the figures and the jobs behind it."""

    guard: str
    limit: str  # LIMIT_LABELS value
    subject: str
    dimensions: dict[str, str]
    actual: float  # what was measured (currency, currency/hour, or hours for run time)
    cap: float  # the limit, same unit
    actual_total: float  # currency figures for the incident row
    expected_total: float
    severity: str
    currency: str
    summary: str
    jobs: tuple[JobLink, ...] = ()
    contributors: tuple[Contributor, ...] = ()

    @property
    def monitor(self) -> str:
        return f"guard:{self.guard}"

    @property
    def series_key(self) -> str:
        return f"{self.limit}|{self.subject}"


@dataclass
class IncidentChanges:
    opened: list[int] = field(default_factory=list)
    updated: list[int] = field(default_factory=list)
    resolved: list[int] = field(default_factory=list)


# -- what is over its limit -----------------------------------------------------------------------


def job_link(item: Estimate | Mapping[str, Any], cost: float | None = None) -> JobLink:
    record = item.record if isinstance(item, Estimate) else item
    platform = str(record["platform"])
    name = record.get("name")
    if platform == "bigquery":  # its record's name is the statement type; people know the job id
        name = str(record["job_id"]).rpartition(".")[2] or name
    figure = cost if cost is not None else (item.cost if isinstance(item, Estimate) else record.get("estimated_cost"))
    return JobLink(
        platform=platform,
        job_id=str(record["job_id"]),
        provider=str(record["provider"]),
        sub_account_id=record.get("sub_account_id"),
        user=record.get("user") or record.get("owner"),
        name=name,
        state=str(record.get("state") or "RUNNING"),
        cost=float(figure or 0.0),
        cost_method=record.get("cost_method"),
        start_time=record.get("start_time"),
        end_time=record.get("end_time"),
        query_text=record.get("query_text"),
        resource_id=record.get("resource_id"),
        region_id=record.get("region_id"),
        labels=labels_of(record.get("labels")),
    )


def _hours(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    return f"{minutes // 60}h{minutes % 60:02d}m"


def _job_breach(guard: GuardConfig, item: Estimate, limit: str) -> Breach | None:
    name, value, settings = guard.job_limit(item.record, limit)
    if value is None:
        return None
    label = LIMIT_LABELS[limit]
    who = item.user or "an unknown user"
    what = f"{item.platform} job {job_link(item).name or item.record['job_id']} of {who}"
    if item.platform == "kubernetes":
        labels = labels_of(item.record.get("labels"))
        where = f"{labels.get('k8s:namespace', '?')}/{item.record.get('name')} in {labels.get('k8s:cluster', '?')}"
        what = f"Kubernetes {labels.get('k8s:kind', 'workload')} {where} of {who}"
    if limit == "max_runtime":
        if item.runtime is None or item.runtime <= value or item.cost is None:
            return None
        ratio = item.runtime / value
        at_limit = item.cost / ratio
        actual, cap = item.runtime.total_seconds() / 3600, value.total_seconds() / 3600
        totals = (item.cost, at_limit)
        summary = (
            f"{what} has run {_hours(item.runtime)}, over its {_hours(value)} limit "
            f"({item.cost:,.2f} {item.currency} so far)"
        )
    else:
        measured = item.cost if limit == "job_cost" else item.projected
        if measured is None or measured <= value:
            return None
        ratio = measured / value if value > 0 else float("inf")
        actual, cap, totals = measured, float(value), (measured, float(value))
        kind = "has cost" if limit == "job_cost" else "is projected to cost"
        summary = f"{what} {kind} {measured:,.2f} {item.currency}, over its {value:,.2f} cap ({item.method})"
    dimensions = {
        "limit": label,
        "provider": str(item.record["provider"]),
        "sub_account_id": item.account or "",
        "platform": item.platform,
        "owner": item.user or "",
        "job_id": str(item.record["job_id"]),
    }
    return Breach(
        guard=name,
        limit=label,
        subject=item.key,
        dimensions=dimensions,
        actual=actual,
        cap=cap,
        actual_total=totals[0],
        expected_total=totals[1],
        severity=severity_for(settings, ratio),
        currency=item.currency,
        summary=summary,
        jobs=(job_link(item),),
    )


def _user_breaches(guard: GuardConfig, rows: Sequence[Mapping[str, Any]], day: str) -> list[Breach]:
    out = []
    for name, match, cap, settings in guard.aggregate_scopes("user_daily_cost"):
        totals: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
        for row in rows:
            who = row.get("user") or row.get("owner")
            if who and match.matches(row):
                totals.setdefault((str(who), str(row["billing_currency"])), []).append(row)
        for (user, currency), jobs in totals.items():
            total = sum(float(r.get("estimated_cost") or 0.0) for r in jobs)
            if total <= cap:
                continue
            running = sorted((r for r in jobs if r.get("_running")), key=lambda r: -float(r.get("estimated_cost") or 0))
            ranked = sorted(jobs, key=lambda r: -float(r.get("estimated_cost") or 0))
            out.append(
                Breach(
                    guard=name,
                    limit="user-daily-cost",
                    subject=f"{user}|{day}|{currency}",
                    dimensions={"limit": "user-daily-cost", "owner": user, "day": day},
                    actual=total,
                    cap=cap,
                    actual_total=total,
                    expected_total=cap,
                    severity=severity_for(settings, total / cap if cap else float("inf")),
                    currency=currency,
                    summary=(
                        f"{user} has spent {total:,.2f} {currency} on {len(jobs)} job(s) today ({day}), over the "
                        f"{cap:,.2f} daily cap; {len(running)} still running"
                    ),
                    jobs=tuple(job_link(r) for r in running[:MAX_JOBS]),
                    contributors=_contributors(ranked, total),
                )
            )
    return out


def _contributors(rows: Sequence[Mapping[str, Any]], total: float) -> tuple[Contributor, ...]:
    out = []
    for row in rows[:MAX_JOBS]:
        cost = float(row.get("estimated_cost") or 0.0)
        share = cost / total if total else 0.0
        out.append(Contributor("job_id", str(row["job_id"]), cost, share, cost, 0.0))
    return tuple(out)


def _project_breaches(guard: GuardConfig, estimates: Sequence[Estimate]) -> list[Breach]:
    out = []
    for name, match, cap, settings in guard.aggregate_scopes("project_burn_rate"):
        groups: dict[tuple[str, str, str], list[Estimate]] = {}
        for item in estimates:
            if item.account and item.burn_rate is not None and match.matches(item.record):
                groups.setdefault((str(item.record["provider"]), item.account, item.currency), []).append(item)
        for (provider, account, currency), items in groups.items():
            burn = sum(i.burn_rate or 0.0 for i in items)
            if burn <= cap:
                continue
            ranked = sorted(items, key=lambda i: -(i.burn_rate or 0.0))
            out.append(
                Breach(
                    guard=name,
                    limit="project-burn-rate",
                    subject=f"{provider}:{account}|{currency}",
                    dimensions={"limit": "project-burn-rate", "provider": provider, "sub_account_id": account},
                    actual=burn,
                    cap=cap,
                    actual_total=burn,
                    expected_total=cap,
                    severity=severity_for(settings, burn / cap if cap else float("inf")),
                    currency=currency,
                    summary=(
                        f"{provider} {account} is burning {burn:,.2f} {currency}/h across {len(items)} running "
                        f"job(s), over its {cap:,.2f} {currency}/h cap"
                    ),
                    jobs=tuple(job_link(i) for i in ranked[:MAX_JOBS]),
                    contributors=tuple(
                        Contributor(
                            "job_id", i.key, i.burn_rate or 0.0, (i.burn_rate or 0.0) / burn, i.burn_rate or 0.0, 0.0
                        )
                        for i in ranked[:MAX_JOBS]
                    ),
                )
            )
    return out


def evaluate(
    guard: GuardConfig, estimates: Sequence[Estimate], day_rows: Sequence[Mapping[str, Any]], day: str
) -> list[Breach]:
    """Every limit exceeded now."""
    breaches: list[Breach] = []
    for item in estimates:
        for limit in PER_JOB_LIMITS:
            found = _job_breach(guard, item, limit)
            if found is not None:
                breaches.append(found)
    breaches += _user_breaches(guard, day_rows, day)
    breaches += _project_breaches(guard, estimates)
    return breaches


# -- storing them as incidents -------------------------------------------------------------------


@dataclass(frozen=True)
class _Row:
    id: int
    monitor: str
    series_key: str
    status: str
    first_seen: datetime
    resolved_at: datetime | None
    severity: str
    points: str
    jobs: str

    @property
    def limit(self) -> str:
        return self.series_key.split("|", 1)[0]


def _rows(con: Connection) -> list[_Row]:
    rows = con.execute(
        "SELECT id, monitor, series_key, status, first_seen, resolved_at, severity, points, jobs FROM anomalies "
        "WHERE kind = 'guard' AND granularity = ? ORDER BY first_seen",
        [GRANULARITY],
    ).fetchall()
    return [_Row(int(r[0]), r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8]) for r in rows]


def record_breaches(
    store: Store,
    breaches: Sequence[Breach],
    *,
    now: datetime,
    running: Iterable[str],
    ok_scopes: set[str],
    complete: bool,
    reopen_within: timedelta,
) -> IncidentChanges:
    """Open, update and resolve guard incidents so the store matches what this poll saw."""
    changes = IncidentChanges()
    still_running = set(running)
    with store.transaction() as con:
        rows = _rows(con)
        latest: dict[tuple[str, str], _Row] = {(r.monitor, r.series_key): r for r in rows}
        touched: set[int] = set()
        for breach in breaches:
            row = latest.get((breach.monitor, breach.series_key))
            if row is not None and _continues(row, breach, now, reopen_within):
                _update(con, row, breach, now)
                changes.updated.append(row.id)
                touched.add(row.id)
            else:
                changes.opened.append(_insert(con, breach, now))
        for row in rows:
            if row.id in touched or row.status not in ACTIVE or latest.get((row.monitor, row.series_key)) is not row:
                continue
            if _over(row, still_running, ok_scopes, complete):
                _resolve(con, row, now, still_running)
                changes.resolved.append(row.id)
    return changes


def _continues(row: _Row, breach: Breach, now: datetime, reopen_within: timedelta) -> bool:
    if row.status in ACTIVE or breach.limit in JOB_LABELS:
        return True
    return row.resolved_at is not None and now - row.resolved_at <= reopen_within


def _over(row: _Row, running: set[str], ok_scopes: set[str], complete: bool) -> bool:
    """Whether an incident no longer breached has really ended (not just gone unseen in a failed listing)."""
    if row.limit not in JOB_LABELS:
        return complete
    links = jobs_from_json(row.jobs)
    if not links:
        return True
    link = links[0]
    key = job_key({"platform": link.platform, "job_id": link.job_id})
    if key in running:
        return True  # still running, but back under its cap (e.g. a projection that came down)
    return scope_of(link.provider, link.platform, link.region_id, link.sub_account_id, link.job_id) in ok_scopes


def _severity(old: str, new: str) -> str:
    order = list(SEVERITY_ORDER)
    return max(old, new, key=lambda s: order.index(s) if s in order else -1)


def _point(breach: Breach, now: datetime) -> SeriesPoint:
    return SeriesPoint(at=now, actual=breach.actual, expected=breach.cap, lower=0.0, upper=breach.cap, is_anomaly=True)


def _figures(breach: Breach) -> list[Any]:
    impact = breach.actual_total - breach.expected_total
    pct = impact / breach.expected_total if breach.expected_total > 0 else 100.0
    score = breach.actual / breach.cap if breach.cap > 0 else 100.0
    return [
        breach.actual,
        breach.cap,
        min(score, 1e6),
        breach.actual_total,
        breach.expected_total,
        impact,
        min(pct, 100.0),
    ]


def _insert(con: Connection, breach: Breach, now: datetime) -> int:
    points = [_point(breach, now)]
    row = con.execute(
        """
        INSERT INTO anomalies (monitor, granularity, series_key, dimensions, billing_currency, kind, status,
            severity, first_seen, last_seen, resolved_at, peak_at, peak_actual, peak_expected, peak_score,
            actual_total, expected_total, impact, impact_pct, contributors, jobs, points, created_at, updated_at)
        VALUES (?, ?, ?, ?, ?, 'guard', 'open', ?, ?, ?, NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        RETURNING id
        """,
        [
            breach.monitor, GRANULARITY, breach.series_key, json.dumps(breach.dimensions), breach.currency,
            breach.severity, now, now, now, *_figures(breach), to_json(list(breach.contributors)),
            to_json(list(breach.jobs)), to_json(points), now, now,
        ],
    ).fetchone()  # fmt: skip
    assert row is not None
    return int(row[0])


def _update(con: Connection, row: _Row, breach: Breach, now: datetime) -> None:
    status = row.status if row.status in ("acknowledged", "expected") else "ongoing"
    points = json.loads(row.points or "[]")
    points.append(json.loads(to_json(_point(breach, now))))
    con.execute(
        """
        UPDATE anomalies SET status = ?, severity = ?, last_seen = ?, resolved_at = NULL, peak_at = ?,
            peak_actual = ?, peak_expected = ?, peak_score = ?, actual_total = ?, expected_total = ?, impact = ?,
            impact_pct = ?, contributors = ?, jobs = ?, points = ?, updated_at = ?
        WHERE id = ?
        """,
        [
            status, _severity(row.severity, breach.severity), now, now, *_figures(breach),
            to_json(list(breach.contributors)), to_json(list(breach.jobs)), json.dumps(points[-MAX_POINTS:]),
            now, row.id,
        ],
    )  # fmt: skip


def _resolve(con: Connection, row: _Row, now: datetime, running: set[str]) -> None:
    status = row.status if row.status in ("acknowledged", "expected") else "resolved"
    links = []
    for link in jobs_from_json(row.jobs):
        key = job_key({"platform": link.platform, "job_id": link.job_id})
        if key not in running and link.state.upper() in JOB_STATES_RUNNING:
            links.append(replace(link, state="ENDED", end_time=link.end_time or now))
        else:
            links.append(link)
    con.execute(
        "UPDATE anomalies SET status = ?, resolved_at = ?, jobs = ?, updated_at = ? WHERE id = ?",
        [status, now, to_json(links), now, row.id],
    )
