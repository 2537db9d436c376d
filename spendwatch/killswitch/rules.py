"""Matching rules to incidents and job records, and turning each match into targets.

An incident rule acts on what detection named as the culprit: the incident's running jobs
(``Incident.jobs``), resources among its contributors (dimension ``resource_id``), the series'
own resource, and — for ``disable-billing`` or a hook on ``gcp-project``/``aws-account`` — the
project or account. A job rule acts on running job records in the ``jobs`` table (the runaway-job
guard opens ``guard`` incidents naming a job; an incident rule with ``kinds: [guard]`` acts on those).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from spendwatch.killswitch.base import Target
from spendwatch.killswitch.config import DEFAULT_JOB_STATES, IncidentWhen, JobWhen, Rule
from spendwatch.killswitch.targets import Located, locate, locate_job, rate_and_stake
from spendwatch.money import format_money
from spendwatch.store import Store
from spendwatch.store.records import Incident, JobLink, labels_dict


@dataclass(frozen=True)
class JobRecord:
    """A row of the ``jobs`` table, as a rule sees it."""

    platform: str
    job_id: str
    provider: str
    sub_account_id: str | None
    region_id: str | None
    name: str | None
    user: str | None
    owner: str | None
    state: str
    start_time: datetime | None
    estimated_cost: float | None
    projected_cost: float | None
    billing_currency: str
    resource_id: str | None
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Match:
    """One rule × one target, with why and the context a hook receives."""

    rule: Rule
    target: Target
    episode: str
    anomaly_id: int | None
    reason: str
    context: dict[str, Any]


def load_running_jobs(store: Store, states: Iterable[str] = DEFAULT_JOB_STATES) -> list[JobRecord]:
    wanted = sorted({s.upper() for s in states})
    rows = store.query(
        f"""
        SELECT platform, job_id, provider, sub_account_id, region_id, name, "user", owner, state, start_time,
               estimated_cost, projected_cost, billing_currency, resource_id, labels
        FROM jobs WHERE upper(state) IN ({", ".join("?" * len(wanted))})
        ORDER BY coalesce(projected_cost, estimated_cost, 0) DESC, platform, job_id
        """,
        wanted,
    )
    return [_job_record(row) for row in rows]


def _job_record(row: tuple[Any, ...]) -> JobRecord:
    return JobRecord(
        platform=row[0],
        job_id=row[1],
        provider=row[2],
        sub_account_id=row[3],
        region_id=row[4],
        name=row[5],
        user=row[6],
        owner=row[7],
        state=row[8],
        start_time=row[9],
        estimated_cost=row[10],
        projected_cost=row[11],
        billing_currency=row[12],
        resource_id=row[13],
        labels=labels_dict(row[14]),
    )


def _glob_any(patterns: Sequence[str], value: str | None) -> bool:
    return value is not None and any(fnmatch.fnmatchcase(value, p) for p in patterns)


def _labels_match(wanted: dict[str, list[str]], labels: dict[str, str]) -> bool:
    for key, patterns in wanted.items():
        if key not in labels:
            return False
        if patterns and not _glob_any(patterns, labels[key]):
            return False
    return True


def incident_matches(when: IncidentWhen, incident: Incident) -> bool:
    checks = (
        incident.status in when.statuses,
        when.severity_ok(incident.severity),
        when.min_impact is None or incident.impact >= when.min_impact,
        when.min_impact_pct is None or incident.impact_pct >= when.min_impact_pct,
        not when.monitors or _glob_any(when.monitors, incident.monitor),
        not when.kinds or incident.kind in when.kinds,
        not when.currencies or incident.billing_currency in when.currencies,
    )
    if not all(checks):
        return False
    return all(_glob_any(values, incident.dimensions.get(dim)) for dim, values in when.dimensions.items())


def job_matches(when: JobWhen, job: JobRecord, now: datetime) -> bool:
    if when.platforms and job.platform.lower() not in {p.lower() for p in when.platforms}:
        return False
    if job.state.upper() not in {s.upper() for s in when.states}:
        return False
    if when.min_estimated_cost is not None and (job.estimated_cost or 0.0) < when.min_estimated_cost:
        return False
    if when.min_projected_cost is not None and (job.projected_cost or 0.0) < when.min_projected_cost:
        return False
    if when.min_runtime is not None and (job.start_time is None or now - job.start_time < when.min_runtime):
        return False
    if when.currencies and job.billing_currency not in when.currencies:
        return False
    if not when.matches_text(job.sub_account_id, job.owner, job.user):
        return False
    return _labels_match(when.labels, job.labels)


def _target(located: Located, **extra: Any) -> Target:
    return Target(
        provider=located.provider,
        resource_type=located.resource_type,
        resource_id=located.resource_id,
        account=located.account,
        region=located.region,
        **extra,
    )


def job_target(job: JobRecord, now: datetime) -> Target | None:
    located = locate_job(
        job.platform,
        job.job_id,
        provider=job.provider,
        account=job.sub_account_id,
        region=job.region_id,
        name=job.name,
        resource_id=job.resource_id,
    )
    if located is None:
        return None
    rate, stake = rate_and_stake(job.estimated_cost, job.projected_cost, job.start_time, now)
    return _target(
        located,
        owner=job.owner or job.user,
        labels=dict(job.labels),
        name=job.name,
        state=job.state,
        saving_per_hour=rate,
        at_stake=stake,
        currency=job.billing_currency,
        origin="job",
    )


def _link_target(link: JobLink, incident: Incident, now: datetime) -> Target | None:
    located = locate_job(
        link.platform,
        link.job_id,
        provider=link.provider,
        account=link.sub_account_id,
        region=link.region_id,
        name=link.name,
        resource_id=link.resource_id,
    )
    if located is None:
        return None
    rate, stake = rate_and_stake(link.cost, None, link.start_time, now)
    return _target(
        located,
        owner=link.user,
        labels=dict(link.labels),
        name=link.name,
        state=link.state,
        saving_per_hour=rate,
        at_stake=stake,
        currency=incident.billing_currency,
        origin="incident-job",
    )


def _incident_hours(incident: Incident) -> float:
    step = timedelta(hours=1) if incident.granularity == "hourly" else timedelta(days=1)
    return max((incident.last_seen - incident.first_seen + step).total_seconds() / 3600.0, 1.0)


def _resource_targets(incident: Incident) -> list[Target]:
    provider = incident.dimensions.get("provider")
    account = incident.dimensions.get("sub_account_id")
    region = incident.dimensions.get("region_id")
    hours = _incident_hours(incident)
    found: list[tuple[str, float]] = []
    own = incident.dimensions.get("resource_id")
    if own:
        found.append((own, incident.impact))
    found.extend((c.value, c.delta) for c in incident.contributors if c.dimension == "resource_id")
    targets = []
    for resource_id, delta in found:
        located = locate(resource_id, provider=provider, account=account, region=region)
        if located is None:
            continue
        rate = max(delta, 0.0) / hours
        owner = incident.dimensions.get("owner")
        targets.append(
            _target(
                located,
                owner=owner,
                saving_per_hour=rate,
                at_stake=rate * 24.0,
                currency=incident.billing_currency,
                origin="incident-resource",
            )
        )
    return targets


def _account_targets(incident: Incident) -> list[Target]:
    provider = incident.dimensions.get("provider")
    accounts = [incident.dimensions.get("sub_account_id")]
    accounts += [c.value for c in incident.contributors if c.dimension == "sub_account_id"]
    hours = _incident_hours(incident)
    targets = []
    for account in dict.fromkeys(a for a in accounts if a):
        if provider not in ("aws", "gcp"):
            continue
        kind = "gcp-project" if provider == "gcp" else "aws-account"
        rate = max(incident.impact, 0.0) / hours
        targets.append(
            Target(
                provider=provider,
                resource_type=kind,
                resource_id=account,
                account=account,
                saving_per_hour=rate,
                at_stake=rate * 24.0,
                currency=incident.billing_currency,
                origin="incident-account",
            )
        )
    return targets


def incident_targets(rule: Rule, incident: Incident, now: datetime) -> list[tuple[Target, JobLink | None]]:
    """The targets ``rule`` may take from ``incident``, each with the job link it came from (if any)."""
    running = {s.upper() for s in DEFAULT_JOB_STATES}
    found: list[tuple[Target, JobLink | None]] = []
    for link in incident.jobs:
        if link.state.upper() in running:
            target = _link_target(link, incident, now)
            if target is not None:
                found.append((target, link))
    found.extend((target, None) for target in _resource_targets(incident))
    # The account/project itself is a target only when asked for (disable-billing, or listed), or
    # for a hook when the incident names nothing narrower: one call per incident, not one per level.
    account_types = {"gcp-project", "aws-account"}
    if account_types & set(rule.resource_types) or rule.do == "disable-billing" or (rule.do == "hook" and not found):
        found.extend((target, None) for target in _account_targets(incident))
    allowed = set(rule.effective_types())
    unique: dict[str, tuple[Target, JobLink | None]] = {}
    for pair in found:
        if pair[0].resource_type in allowed:
            unique.setdefault(pair[0].key, pair)
    return list(unique.values())


def incident_context(incident: Incident) -> dict[str, Any]:
    return {
        "id": incident.id,
        "monitor": incident.monitor,
        "kind": incident.kind,
        "status": incident.status,
        "severity": incident.severity,
        "title": incident.title,
        "dimensions": dict(incident.dimensions),
        "impact": incident.impact,
        "impact_pct": incident.impact_pct,
        "currency": incident.billing_currency,
        "first_seen": incident.first_seen.isoformat(),
        "last_seen": incident.last_seen.isoformat(),
        "culprit": incident.culprit_sentence(),
    }


def job_context(job: JobRecord) -> dict[str, Any]:
    return {
        "platform": job.platform,
        "job_id": job.job_id,
        "provider": job.provider,
        "account": job.sub_account_id,
        "region": job.region_id,
        "name": job.name,
        "user": job.user,
        "owner": job.owner,
        "state": job.state,
        "start_time": job.start_time.isoformat() if job.start_time else None,
        "estimated_cost": job.estimated_cost,
        "projected_cost": job.projected_cost,
        "currency": job.billing_currency,
    }


def match_rule(rule: Rule, incidents: Sequence[Incident], jobs: Sequence[JobRecord], now: datetime) -> list[Match]:
    matches: list[Match] = []
    if rule.when.incident is not None:
        for incident in incidents:
            if not incident_matches(rule.when.incident, incident):
                continue
            impact = format_money(incident.impact, incident.billing_currency, signed=True)
            # A guard incident's "expected" is the cap the job crossed.
            baseline = "over its cap" if incident.kind == "guard" else "over expected"
            headline = (
                f"incident #{incident.id} ({incident.severity} {incident.kind}, "
                f"{impact} {baseline} on {incident.title})"
            )
            context = {"incident": incident_context(incident), "job": None}
            # A target that is one of the incident's jobs is described by that job, not by the
            # incident's top culprit (which may be another job: "stop B because A cost $8k").
            for target, link in incident_targets(rule, incident, now):
                culprit = link.sentence(incident.billing_currency) if link is not None else incident.culprit_sentence()
                reason = f"{headline}: {culprit}"
                matches.append(Match(rule, target, f"incident:{incident.id}", incident.id, reason, context))
    if rule.when.job is not None:
        allowed = set(rule.effective_types())
        for job in jobs:
            if not job_matches(rule.when.job, job, now):
                continue
            job_found = job_target(job, now)
            if job_found is None or job_found.resource_type not in allowed:
                continue
            cost = job.projected_cost if job.projected_cost is not None else job.estimated_cost
            who = job.owner or job.user or "an unknown owner"
            reason = (
                f"{job.platform} job {job.name or job.job_id} of {who} is {job.state} "
                f"at {format_money(cost or 0.0, job.billing_currency or 'USD')}"
                + (" (projected)" if job.projected_cost is not None else "")
            )
            context = {"incident": None, "job": job_context(job)}
            matches.append(Match(rule, job_found, f"job:{job.platform}:{job.job_id}", None, reason, context))
    return matches


def one_match_per_target(matches: Sequence[Match], usable: Callable[[Match], bool]) -> list[Match]:
    """One match per target (``Target.key``), in the order the targets were first matched.

    Several incidents often name the same culprit (the account's total, its service and its owner
    each alert on one runaway job), and a job rule can match it too: without this, one job got one
    action per incident — duplicate approvals, a second stop of a stopped job, and a rule's
    ``max_targets`` counting one target several times. Kept per target: a match whose scope is usable
    (so merging never loses an action that one of the matches allowed), then an incident's over a job
    record's, then the most specific incident (most dimensions: the service's over the account total's,
    whose reason names the culprit's share more exactly), then the oldest (the lowest id). All three are
    fixed for an incident's life, so the idempotency key stays the same from run to run while it is
    open. The others are named in its reason.
    """
    groups: dict[str, list[Match]] = {}
    for match in matches:
        groups.setdefault(match.target.key, []).append(match)
    kept = []
    for group in groups.values():
        first, *others = sorted(
            group, key=lambda m: (not usable(m), m.anomaly_id is None, -_specificity(m), m.anomaly_id or 0)
        )
        also = [f"incident #{m.anomaly_id}" if m.anomaly_id is not None else "a running job record" for m in others]
        kept.append(replace(first, reason=f"{first.reason} (also matched by {', '.join(also)})") if also else first)
    return kept


def _specificity(match: Match) -> int:
    found = match.context.get("incident") or {}
    return len(found.get("dimensions") or {})
