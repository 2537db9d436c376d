"""Scope: a target must lie inside what its rule covers, and inside the incident or job it came from.

Incidents and job records are built from strings anyone in the company can write (tags naming a
job, resource ids, ARNs in an export), so the kill switch does not take their word for *where* a
target lives. Before an action is planned, and again right before it is carried out, the target's
coordinates are checked against

* the rule: ``when.incident.dimensions`` on ``provider``, ``sub_account_id``, ``region_id``,
  ``cluster`` and ``namespace`` (globs, as the rule matched the incident), or ``when.job.accounts``
  for a job rule — a target whose coordinate is unknown is outside a rule that names it;
* its source: the incident's own ``provider``/``sub_account_id`` (and ``cluster``/``namespace``)
  dimensions, or the job record's provider and account (a job whose resource ARN names another
  account is refused).

A Kubernetes workload (``k8s://<cluster>/<namespace>/<Kind>/<name>``) is a target in a cluster, and
where that cluster runs — its AWS account or GCP project and region — is never taken from the
record: it is what ``killswitch.kubernetes.clusters.<cluster>`` says (``provider``, ``account``,
``region``). A cluster not listed there has no known place, so a rule or an incident that names an
account, project or region cannot reach it. An incident's or a rule's ``cluster`` and ``namespace``
dimensions bind the target's cluster and namespace too.

A target outside either is refused with one line naming what did not fit.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from spendwatch.k8s_client import KubernetesConnection
from spendwatch.killswitch.base import Target
from spendwatch.killswitch.config import Rule
from spendwatch.killswitch.journal import ActionRecord

NONE_VALUE = "(none)"  # an untagged series' value (spendwatch.detect.monitors): names no scope
# Incident dimensions that say where a target lives, and the Target field each one constrains.
_WHERE: tuple[tuple[str, str, str], ...] = (
    ("provider", "provider", "provider"),
    ("sub_account_id", "account", "account/project"),
    ("region_id", "region", "region"),
)
# A Kubernetes target's cluster and namespace, bound by these dimensions of an incident or a rule.
_K8S_WHERE: tuple[tuple[str, str, str], ...] = (
    ("cluster", "cluster", "cluster"),
    ("namespace", "namespace", "namespace"),
)
_ZONE = re.compile(r"^(?P<region>.+)-[a-z]$")


@dataclass(frozen=True)
class _Place:
    """Where a target runs, as the scope checks compare it."""

    provider: str | None
    account: str | None
    region: str | None
    cluster: str | None = None
    namespace: str | None = None
    note: str = ""  # why the place is unknown, appended to a refusal


def _place(target: Target, clusters: Mapping[str, KubernetesConnection] | None) -> _Place:
    if target.provider != "kubernetes":
        return _Place(target.provider, target.account, target.region)
    cluster, namespace = target.account, target.region
    connection = (clusters or {}).get(cluster or "")
    if connection is None:
        note = f" (cluster {cluster} is not under killswitch.kubernetes.clusters, so where it runs is unknown)"
        return _Place(None, None, None, cluster, namespace, note)
    provider, account, region = connection.host(cluster or "")
    return _Place(provider, account, region, cluster, namespace)


def scope_problem(
    rule: Rule,
    target: Target,
    context: Mapping[str, Any] | None,
    *,
    clusters: Mapping[str, KubernetesConnection] | None = None,
) -> str | None:
    """Why ``target`` is outside ``rule`` or its source (``context``: a match's incident/job), or ``None``.

    ``clusters`` (``killswitch.kubernetes.clusters``) says where each Kubernetes cluster runs.
    """
    place = _place(target, clusters)
    problem = _rule_problem(rule, place) or _source_problem(place, context or {})
    if problem is not None:
        return f"outside the rule's scope: {problem}{place.note}"
    return None


def _rule_problem(rule: Rule, place: _Place) -> str | None:
    if rule.when.incident is not None:
        wanted = rule.when.incident.dimensions
        checks = _WHERE + (_K8S_WHERE if place.cluster is not None else ())
        for dimension, attribute, label in checks:
            patterns = wanted.get(dimension)
            if not patterns:
                continue
            value = getattr(place, attribute)
            if value is None:
                return f"its {label} is unknown and rule {rule.name} only acts in {_listed(patterns)}"
            if not _fits(dimension, value, patterns):
                return f"{label} {value} is not in rule {rule.name}'s {_listed(patterns)}"
    if rule.when.job is not None and rule.when.job.accounts:
        patterns = rule.when.job.accounts
        if place.account is None:
            return f"its account/project is unknown and rule {rule.name} only acts in {_listed(patterns)}"
        if not any(fnmatch.fnmatchcase(place.account, p) for p in patterns):
            return f"account/project {place.account} is not in rule {rule.name}'s {_listed(patterns)}"
    return None


def _source_problem(place: _Place, context: Mapping[str, Any]) -> str | None:
    incident = context.get("incident")
    if isinstance(incident, Mapping):
        dimensions = incident.get("dimensions") or {}
        checks = _WHERE[:2] + (_K8S_WHERE if place.cluster is not None else ())
        for dimension, attribute, label in checks:
            expected = dimensions.get(dimension)
            if not expected or expected == NONE_VALUE:
                continue
            value = getattr(place, attribute)
            if value != expected:
                shown = "unknown" if value is None else value
                return f"{label} {shown} is not incident #{incident.get('id')}'s {expected}"
    job = context.get("job")
    if isinstance(job, Mapping):
        if job.get("provider") and place.provider != job["provider"]:
            shown = "unknown" if place.provider is None else place.provider
            return f"provider {shown} is not the job's {job['provider']}"
        if job.get("account") and place.account != job["account"]:
            shown = "unknown" if place.account is None else place.account
            return f"account/project {shown} is not the job record's {job['account']}"
    return None


def _fits(dimension: str, value: str, patterns: Sequence[str]) -> bool:
    if dimension == "region_id":
        # Regions compare case-blind (BigQuery says "US", bills "us"); a zone is inside its region.
        candidates = [value.lower()]
        zone = _ZONE.match(value.lower())
        if zone is not None:
            candidates.append(zone["region"])
        return any(fnmatch.fnmatchcase(c, p.lower()) for c in candidates for p in patterns)
    return any(fnmatch.fnmatchcase(value, p) for p in patterns)


def _listed(patterns: Sequence[str]) -> str:
    return "[" + ", ".join(patterns) + "]"


def rule_problem(
    rule: Rule | None,
    record: ActionRecord,
    *,
    clusters: Mapping[str, KubernetesConnection] | None = None,
) -> str | None:
    """Why the rule (as configured now) no longer lets a planned or approved action go ahead, or ``None``.

    An approval (or a crash-interrupted plan) can outlive its rule: what acts is the config as it
    stands now, so a rule deleted, disabled, switched to dry-run or to another verb, or narrowed so
    that the target is outside it, stops its actions.
    """
    if rule is None:
        return f"rule {record.rule} is no longer in the config; nothing done"
    if not rule.enabled:
        return f"rule {record.rule} is disabled; nothing done"
    if rule.how == "dry-run":
        return f"rule {record.rule} is now dry-run; nothing done"
    if rule.do != record.verb:
        return f"rule {record.rule} now says {rule.do!r}, not {record.verb!r}; nothing done"
    outside = scope_problem(rule, record.target, record.plan.get("context"), clusters=clusters)
    return None if outside is None else f"{outside}; nothing done"
