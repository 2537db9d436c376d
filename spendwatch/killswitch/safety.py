"""Safety belts, on by default: protection, the re-read check, the circuit breaker, the global pause.

* **Protection** — a resource carrying a protecting tag/label (``spendwatch:protect=true``,
  ``env=prod`` … as configured), in a listed account/project, listed by id, or owned by a listed
  owner is never acted on. It is checked at plan time (on what the records say) and again on the
  re-read right before acting (on what the cloud says now).
* **Re-read** — right before acting, the target is re-read; the action is skipped if it is gone, if
  its state is no longer one the action may act from, if its owner changed, or if it became protected.
* **Circuit breaker** — caps on actions per run, per rolling hour (counted in the journal, so it holds
  across processes) and on the $ at stake per run; a rule matching more than ``max_targets`` in one
  run acts on none of them (a typo in a rule must not stop a fleet).
* **Global pause** — ``spendwatch actions pause`` sets ``killswitch.paused`` in the store's
  ``settings`` table; every run and every approval re-reads it right before acting.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from spendwatch.killswitch.base import Observed, Target
from spendwatch.killswitch.config import Caps, KillSwitchConfig, Protection
from spendwatch.store import Store

PAUSE_KEY = "killswitch.paused"


def _glob(patterns: list[str], value: str | None) -> str | None:
    if value is None:
        return None
    return next((p for p in patterns if fnmatch.fnmatchcase(value, p)), None)


def _fold(text: object) -> str:
    return str(text).strip().casefold()


def protecting_tag(protection: Protection, labels: Mapping[str, str]) -> str | None:
    """``key=value`` of the first label that protects, or ``None``.

    Every label is looked at, whatever its spelling: a resource tagged both ``Environment=Production``
    and ``environment=dev`` is protected (any spelling of a protection key with a protecting value
    protects, so conflicting values protect), never one or the other by the order an API listed them.
    """
    wanted = {_fold(key): {_fold(v) for v in values} for key, values in protection.tags.items()}
    for key, value in sorted(labels.items(), key=lambda item: (str(item[0]), str(item[1]))):
        values = wanted.get(_fold(key))
        if values is None:
            continue
        if not values or _fold(value) in values:
            return f"{key}={value}"
    return None


def protection_reason(protection: Protection, target: Target, labels: Mapping[str, str] | None = None) -> str | None:
    """Why ``target`` is protected (one phrase), or ``None`` when it is not."""
    tag = protecting_tag(protection, target.labels if labels is None else labels)
    if tag is not None:
        return f"protected by tag {tag}"
    if target.provider == "kubernetes":
        return _kubernetes_protection(protection, target)
    accounts = protection.accounts if target.provider == "aws" else protection.projects
    what = "account" if target.provider == "aws" else "project"
    hit = _glob(accounts, target.account)
    if hit is not None:
        return f"protected {what} {target.account}"
    if target.resource_type == "gcp-project" and _glob(protection.projects, target.resource_id):
        return f"protected project {target.resource_id}"
    hit = _glob(protection.resources, target.resource_id) or _glob(protection.resources, target.name)
    if hit is not None:
        return f"protected resource (matches {hit!r})"
    hit = _glob(protection.owners, target.owner)
    if hit is not None:
        return f"protected owner {target.owner}"
    return None


def _kubernetes_protection(protection: Protection, target: Target) -> str | None:
    """Clusters, namespaces (``ns`` or ``cluster/ns``), resource ids and owners that are never acted on."""
    cluster, namespace = target.account, target.region
    hit = _glob(protection.clusters, cluster)
    if hit is not None:
        return f"protected cluster {cluster}"
    hit = _glob(protection.namespaces, namespace) or _glob(protection.namespaces, f"{cluster}/{namespace}")
    if hit is not None:
        return f"protected namespace {namespace} (matches {hit!r})"
    hit = _glob(protection.resources, target.resource_id) or _glob(protection.resources, target.name)
    if hit is not None:
        return f"protected resource (matches {hit!r})"
    hit = _glob(protection.owners, target.owner)
    return f"protected owner {target.owner}" if hit is not None else None


def owner_from_labels(labels: Mapping[str, str], owner_tags: list[str]) -> str | None:
    """The first owner tag present (in ``owner_tags`` order), the configured spelling before others.

    Deterministic whatever order the labels came in: ``{"Owner": "bob", "owner": "ana"}`` with
    ``owner_tags: [owner]`` is ana's, however the API listed them.
    """
    for key in owner_tags:
        value = labels.get(key)
        if value:
            return str(value)
        spellings = sorted((str(k), str(v)) for k, v in labels.items() if _fold(k) == _fold(key) and v)
        if spellings:
            return spellings[0][1]
    return None


def reread_problem(
    config: KillSwitchConfig,
    target: Target,
    observed: Observed | None,
    valid_states: frozenset[str],
) -> str | None:
    """Why the re-read target must be skipped, or ``None`` when it may be acted on."""
    if observed is None:
        return "gone: the target no longer exists"
    if observed.refusal:
        return observed.refusal
    if valid_states and observed.state not in valid_states:
        return f"state is {observed.state}, not one of {', '.join(sorted(valid_states))}"
    merged = {**dict(target.labels), **dict(observed.labels)}
    reason = protection_reason(config.protection, target, merged)
    if reason is not None:
        return f"{reason} (on re-read)"
    owner_now = observed.owner or owner_from_labels(observed.labels, config.owner_tags)
    if owner_now and target.owner and owner_now.lower() != target.owner.lower():
        return f"owner changed from {target.owner} to {owner_now} since it was planned"
    return None


def is_paused(store: Store) -> bool:
    return (store.get_setting(PAUSE_KEY) or "false") == "true"


def set_paused(store: Store, paused: bool, actor: str) -> None:
    store.set_setting(PAUSE_KEY, "true" if paused else "false", actor)


def pause_info(store: Store) -> tuple[bool, str | None, datetime | None]:
    rows = store.query("SELECT value, updated_by, updated_at FROM settings WHERE key = ?", [PAUSE_KEY])
    if not rows:
        return False, None, None
    value, actor, at = rows[0]
    return value == "true", actor, at


def executed_since(store: Store, since: datetime) -> int:
    """Actions that really ran (not dry-run) since ``since``: the rolling-hour cap counts these."""
    rows = store.query(
        "SELECT count(*) FROM actions WHERE started_at >= ? AND mode <> 'dry-run'",
        [since],
    )
    return int(rows[0][0]) if rows else 0


@dataclass
class Breaker:
    """Counts what one run executed and refuses beyond the caps (the hourly count is read from the journal)."""

    caps: Caps
    store: Store
    now: datetime
    executed: int = 0
    at_stake: float = 0.0
    tripped: list[str] = field(default_factory=list)

    def refusal(self, at_stake: float | None) -> str | None:
        caps = self.caps
        if self.executed >= caps.max_actions_per_run:
            return f"circuit breaker: max_actions_per_run ({caps.max_actions_per_run}) reached"
        hourly = executed_since(self.store, self.now - timedelta(hours=1))
        if hourly >= caps.max_actions_per_hour:
            return f"circuit breaker: max_actions_per_hour ({caps.max_actions_per_hour}) reached"
        if caps.max_at_stake_per_run is not None and self.at_stake + (at_stake or 0.0) > caps.max_at_stake_per_run:
            return (
                f"circuit breaker: max_at_stake_per_run ({caps.max_at_stake_per_run:,.2f}) would be exceeded "
                f"({self.at_stake:,.2f} already + {at_stake or 0.0:,.2f})"
            )
        return None

    def count(self, at_stake: float | None) -> None:
        self.executed += 1
        self.at_stake += at_stake or 0.0
