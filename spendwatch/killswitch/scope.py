"""Scope: a target must lie inside what its rule covers, and inside the incident or job it came from.

Incidents and job records are built from strings anyone in the company can write (tags naming a
job, resource ids, ARNs in an export), so the kill switch does not take their word for *where* a
target lives. Before an action is planned, and again right before it is carried out, the target's
provider, account/project and region are checked against

* the rule: ``when.incident.dimensions`` on ``provider``, ``sub_account_id`` and ``region_id``
  (globs, as the rule matched the incident), or ``when.job.accounts`` for a job rule — a target
  whose account or region is unknown is outside a rule that names them;
* its source: the incident's own ``provider``/``sub_account_id`` dimensions, or the job record's
  provider and account (a job whose resource ARN names another account is refused).

A target outside either is refused with one line naming what did not fit.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from typing import Any

from spendwatch.killswitch.base import Target
from spendwatch.killswitch.config import Rule

NONE_VALUE = "(none)"  # an untagged series' value (spendwatch.detect.monitors): names no scope
# Incident dimensions that say where a target lives, and the Target field each one constrains.
_WHERE: tuple[tuple[str, str, str], ...] = (
    ("provider", "provider", "provider"),
    ("sub_account_id", "account", "account/project"),
    ("region_id", "region", "region"),
)
_ZONE = re.compile(r"^(?P<region>.+)-[a-z]$")


def scope_problem(rule: Rule, target: Target, context: Mapping[str, Any] | None) -> str | None:
    """Why ``target`` is outside ``rule`` or its source (``context``: a match's incident/job), or ``None``."""
    problem = _rule_problem(rule, target)
    if problem is not None:
        return f"outside the rule's scope: {problem}"
    problem = _source_problem(target, context or {})
    if problem is not None:
        return f"outside the rule's scope: {problem}"
    return None


def _rule_problem(rule: Rule, target: Target) -> str | None:
    if rule.when.incident is not None:
        wanted = rule.when.incident.dimensions
        for dimension, attribute, label in _WHERE:
            patterns = wanted.get(dimension)
            if not patterns:
                continue
            value = getattr(target, attribute)
            if value is None:
                return f"its {label} is unknown and rule {rule.name} only acts in {_listed(patterns)}"
            if not _fits(dimension, value, patterns):
                return f"{label} {value} is not in rule {rule.name}'s {_listed(patterns)}"
    if rule.when.job is not None and rule.when.job.accounts:
        patterns = rule.when.job.accounts
        if target.account is None:
            return f"its account/project is unknown and rule {rule.name} only acts in {_listed(patterns)}"
        if not any(fnmatch.fnmatchcase(target.account, p) for p in patterns):
            return f"account/project {target.account} is not in rule {rule.name}'s {_listed(patterns)}"
    return None


def _source_problem(target: Target, context: Mapping[str, Any]) -> str | None:
    incident = context.get("incident")
    if isinstance(incident, Mapping):
        dimensions = incident.get("dimensions") or {}
        for dimension, attribute, label in _WHERE[:2]:
            expected = dimensions.get(dimension)
            if not expected or expected == NONE_VALUE:
                continue
            value = getattr(target, attribute)
            if value != expected:
                shown = "unknown" if value is None else value
                return f"{label} {shown} is not incident #{incident.get('id')}'s {expected}"
    job = context.get("job")
    if isinstance(job, Mapping):
        if job.get("provider") and target.provider != job["provider"]:
            return f"provider {target.provider} is not the job's {job['provider']}"
        if job.get("account") and target.account != job["account"]:
            shown = "unknown" if target.account is None else target.account
            return f"account/project {shown} is not the job record's {job['account']}"
    return None


def _fits(dimension: str, value: str, patterns: Sequence[str]) -> bool:
    candidates = [value]
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
