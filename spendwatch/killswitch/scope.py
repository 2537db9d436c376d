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

A cloud resource's coordinates are its own provider, account/project and region. A Kubernetes
workload's are its cluster and namespace, and for the cloud ones, where the record that named it
says it is billed (``Target.billed``). A target outside is refused with one line naming what did not
fit.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from typing import Any

from spendwatch.killswitch.base import Target
from spendwatch.killswitch.config import Rule
from spendwatch.killswitch.journal import ActionRecord

NONE_VALUE = "(none)"  # an untagged series' value (spendwatch.detect.monitors): names no scope
_LABELS = {
    "provider": "provider",
    "sub_account_id": "account/project",
    "region_id": "region",
    "cluster": "cluster",
    "namespace": "namespace",
}
_ZONE = re.compile(r"^(?P<region>.+)-[a-z]$")


def coordinates(target: Target) -> dict[str, str | None]:
    """Where ``target`` lives, by dimension name (``None``: not known, or not that kind of target)."""
    if target.provider == "kubernetes":
        billed = target.billed
        return {
            "provider": billed.get("provider"),
            "sub_account_id": billed.get("account"),
            "region_id": billed.get("region"),
            "cluster": target.account,
            "namespace": target.region,
        }
    return {
        "provider": target.provider,
        "sub_account_id": target.account,
        "region_id": target.region,
        "cluster": None,
        "namespace": None,
    }


def scope_problem(rule: Rule, target: Target, context: Mapping[str, Any] | None) -> str | None:
    """Why ``target`` is outside ``rule`` or its source (``context``: a match's incident/job), or ``None``."""
    where = coordinates(target)
    problem = _rule_problem(rule, where) or _source_problem(target, where, context or {})
    return None if problem is None else f"outside the rule's scope: {problem}"


def _rule_problem(rule: Rule, where: Mapping[str, str | None]) -> str | None:
    if rule.when.incident is not None:
        wanted = rule.when.incident.dimensions
        for dimension, label in _LABELS.items():
            patterns = wanted.get(dimension)
            if not patterns:
                continue
            value = where[dimension]
            if value is None:
                return f"its {label} is unknown and rule {rule.name} only acts in {_listed(patterns)}"
            if not _fits(dimension, value, patterns):
                return f"{label} {value} is not in rule {rule.name}'s {_listed(patterns)}"
    if rule.when.job is not None and rule.when.job.accounts:
        patterns = rule.when.job.accounts
        account = where["sub_account_id"]
        if account is None:
            return f"its account/project is unknown and rule {rule.name} only acts in {_listed(patterns)}"
        if not any(fnmatch.fnmatchcase(account, p) for p in patterns):
            return f"account/project {account} is not in rule {rule.name}'s {_listed(patterns)}"
    return None


def _source_problem(target: Target, where: Mapping[str, str | None], context: Mapping[str, Any]) -> str | None:
    incident = context.get("incident")
    if isinstance(incident, Mapping):
        dimensions = incident.get("dimensions") or {}
        names = ["provider", "sub_account_id"]
        if target.provider == "kubernetes":
            names += ["cluster", "namespace"]
        for dimension in names:
            expected = dimensions.get(dimension)
            if not expected or expected == NONE_VALUE:
                continue
            value = where[dimension]
            if value != expected:
                shown = "unknown" if value is None else value
                return f"{_LABELS[dimension]} {shown} is not incident #{incident.get('id')}'s {expected}"
    job = context.get("job")
    if isinstance(job, Mapping):
        if job.get("provider") and where["provider"] != job["provider"]:
            return f"provider {where['provider']} is not the job record's {job['provider']}"
        if job.get("account") and where["sub_account_id"] != job["account"]:
            shown = where["sub_account_id"] or "unknown"
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


def rule_problem(rule: Rule | None, record: ActionRecord) -> str | None:
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
    outside = scope_problem(rule, record.target, record.plan.get("context"))
    return None if outside is None else f"{outside}; nothing done"
