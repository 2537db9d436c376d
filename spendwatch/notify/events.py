"""Alert events: what happened to an incident or a kill-switch action, for channels that track alerts.

A chat message is read once; an incident tool (PagerDuty) keeps an alert open until told otherwise.
An ``AlertEvent`` says which alert (``subject``: ``incident:7``, ``action:12`` — the dedup key), what
happened to it (``trigger``, ``acknowledge``, ``resolve``), and, for a trigger, what a responder sees
first: summary, severity, where (source, component, group), what kind, and details.

Every string here is *text* from the store and the cloud's data: the channel that sends an event
escapes it (``notify.chat.escape``), as chat channels do.

How a subject moves (``lifecycle`` sends the follow-ups):

========================================  =========================================================
incident open / ongoing                   ``trigger`` (again at a higher severity, or when it
                                          comes back after a resolve)
incident acknowledged, still going        ``acknowledge``
incident resolved, withdrawn, expected,   ``resolve``
or acknowledged and over
action awaiting approval, failed          ``trigger``
action done, undone, expired, rejected,   ``resolve`` (of the same action's alert)
skipped
========================================  =========================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from spendwatch.money import format_money

if TYPE_CHECKING:
    from spendwatch.killswitch.journal import ActionRecord
    from spendwatch.store.records import Incident

EventAction = Literal["trigger", "acknowledge", "resolve"]
ACTION_TRIGGER_STATES = frozenset({"awaiting-approval", "failed"})
ACTION_RESOLVE_STATES = frozenset({"done", "undone", "expired", "rejected", "skipped"})
INCIDENT_RESOLVED_STATUSES = frozenset({"resolved", "withdrawn", "expected"})


@dataclass(frozen=True)
class AlertEvent:
    """One event on one alert. ``severity`` is spendwatch's (low … critical); channels map it."""

    action: EventAction
    subject: str
    summary: str
    severity: str = "high"
    source: str = "spendwatch"
    component: str | None = None
    group: str | None = None
    kind: str | None = None
    at: datetime | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


def alert_state(kind: str, status: str, resolved_at: datetime | None) -> EventAction | None:
    """Where an incident's alert should stand now (``None``: a drop, never alerted)."""
    if kind == "drop":
        return None
    if status in ("open", "ongoing"):
        return "trigger"
    if status == "acknowledged":  # acknowledged stays the status; ``resolved_at`` says it is over
        return "acknowledge" if resolved_at is None else "resolve"
    if status in INCIDENT_RESOLVED_STATUSES:
        return "resolve"
    return None


def incident_event(incident: Incident, action: EventAction, summary: str) -> AlertEvent:
    """An incident's event; a trigger carries the figures a responder needs first."""
    dims = incident.dimensions
    provider = dims.get("provider")
    account = dims.get("sub_account_id") or dims.get("billing_account_id") or dims.get("cluster")
    where = "/".join(v for v in (provider, account) if v)
    currency = incident.billing_currency
    details: dict[str, Any] = {
        "incident": incident.id,
        "status": incident.status,
        "kind": incident.kind,
        "severity": incident.severity,
        "monitor": incident.monitor,
        "series": dict(dims),
        "window": f"{incident.first_seen:%Y-%m-%d %H:%M} – {incident.last_seen:%Y-%m-%d %H:%M} UTC",
        "impact": format_money(incident.impact, currency, signed=True),
        "impact_pct": f"{incident.impact_pct:+.0%}",
        "actual": format_money(incident.actual_total, currency),
        "expected": format_money(incident.expected_total, currency),
        "culprit": incident.culprit_sentence(),
        "contributors": [
            f"{c.dimension}: {c.value} ({c.share:.0%}, {format_money(c.delta, currency, signed=True)})"
            for c in incident.contributors[:5]
        ],
        "details_command": f"spendwatch anomalies show {incident.id}",
        "acknowledge_command": f"spendwatch anomalies ack {incident.id}",
    }
    return AlertEvent(
        action=action,
        subject=f"incident:{incident.id}",
        summary=summary,
        severity=incident.severity,
        source=where or f"spendwatch monitor {incident.monitor}",
        component=dims.get("service_name") or dims.get("workload") or dims.get("namespace"),
        group=incident.monitor,
        kind=f"cost {incident.kind}",
        at=incident.first_seen,
        details=details,
    )


def action_event(action: ActionRecord, summary: str) -> AlertEvent | None:
    """A kill-switch action's event: a trigger when someone must look, a resolve when it settled."""
    if action.state in ACTION_TRIGGER_STATES:
        kind: EventAction = "trigger"
    elif action.state in ACTION_RESOLVE_STATES:
        kind = "resolve"
    else:
        return None
    target = action.target
    details: dict[str, Any] = {
        "action": action.id,
        "state": action.state,
        "rule": action.rule,
        "mode": action.mode,
        "verb": action.verb,
        "target": target.describe(),
        "owner": action.owner,
        "reason": action.reason,
        "error": action.error,
    }
    if action.state == "awaiting-approval":
        details["approve_command"] = f"spendwatch actions approve {action.id}"
        details["reject_command"] = f"spendwatch actions reject {action.id}"
    if action.saving_per_hour:
        details["saving_per_hour"] = format_money(action.saving_per_hour, target.currency)
    return AlertEvent(
        action=kind,
        subject=f"action:{action.id}",
        summary=summary,
        severity="high",
        source="/".join(v for v in (target.provider, target.account) if v) or "spendwatch kill switch",
        component=target.resource_type,
        group=f"rule {action.rule}",
        kind=f"kill switch {action.state}",
        at=action.updated_at,
        details={k: v for k, v in details.items() if v is not None},
    )
