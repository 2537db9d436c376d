"""Follow-ups for channels that track alerts: acknowledge and resolve what they were triggered for.

The alert pass triggers an incident once per severity (ledger key ``incident:<id>:<severity>``). A
channel whose type ``follows_incidents`` (PagerDuty) must also hear when the incident is
acknowledged, when it is over, and when it comes back. This module works that out per channel from
the alert ledger alone:

* the events a channel took for an incident are its ledger keys ``incident:<id>:<severity>`` (the
  trigger) and ``<action>:incident:<id>:<n>`` (follow-ups, numbered from 1 per incident and channel);
* where the incident stands now (``events.incident_state``) is compared with the last event the
  channel took; when they differ, follow-up ``n + 1`` is due.

Only incidents a channel was triggered for are followed (nobody is paged for an acknowledge of an
incident they never saw), and a follow-up is an ordinary ledger entry: sent once, retried with
backoff, and reported like any alert.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING

from spendwatch.notify.channels import CHANNELS, AlertMessage
from spendwatch.notify.events import EventAction, alert_state, incident_event
from spendwatch.store import Store, Where

if TYPE_CHECKING:
    from spendwatch.clock import Clock
    from spendwatch.config import Config
    from spendwatch.notify.config import NotifyConfig
    from spendwatch.store.records import Incident

_TRIGGER = re.compile(r"^incident:(\d+):[a-z]+$")
_FOLLOW_UP = re.compile(r"^(trigger|acknowledge|resolve):incident:(\d+):(\d+)$")
_WORDS = {"acknowledge": "acknowledged", "resolve": "over", "trigger": "alerting again"}


FullAlert = Callable[["Incident", "NotifyConfig", tuple[str, ...]], AlertMessage]
"""How an incident's whole alert is built (``alerts.incident_alert``; passed in, as alerts imports this module)."""


@dataclass(frozen=True)
class FollowUp:
    alert: AlertMessage
    channels: tuple[str, ...]
    at: datetime


def follow_ups(config: Config, store: Store, clock: Clock, full_alert: FullAlert) -> list[FollowUp]:
    """The acknowledge / resolve / re-trigger events due on every channel that follows incidents.
    ``full_alert`` builds an incident's whole alert (``alerts.incident_alert``), sent again when it re-triggers."""
    notify = config.notify
    following = [c.name for c in notify.channels if CHANNELS.get(c.type).follows_incidents]
    if not following:
        return []
    last = _last_events(store, following)
    if not last:
        return []
    wanted = _states(store, sorted({incident for incident, _ in last}))
    due: dict[tuple[int, EventAction, int], list[str]] = defaultdict(list)
    for (incident_id, channel), (number, taken) in last.items():
        state = wanted.get(incident_id)
        if state is not None and state != taken:
            due[(incident_id, state, number + 1)].append(channel)
    if not due:
        return []
    from spendwatch.detect.incidents import get_incident

    out = []
    for (incident_id, action, number), channels in sorted(due.items()):
        incident = get_incident(store, incident_id)
        key = f"{action}:incident:{incident_id}:{number}"
        out.append(
            FollowUp(
                _alert(config, incident, action, key, full_alert), tuple(channels), incident.updated_at or clock.now()
            )
        )
    return out


def _last_events(store: Store, channels: list[str]) -> dict[tuple[int, str], tuple[int, EventAction]]:
    """(incident, channel) → (number, action) of the newest event the channel took for the incident."""
    where = Where().any_of("channel", channels)
    rows = store.query(
        f"SELECT key, channel FROM alerts_sent {where.sql} AND (key LIKE 'incident:%' OR key LIKE '%:incident:%')",
        where.params,
    )
    last: dict[tuple[int, str], tuple[int, EventAction]] = {}
    for key, channel in rows:
        trigger = _TRIGGER.match(key)
        follow = _FOLLOW_UP.match(key)
        if trigger is not None:
            incident_id, number, action = int(trigger.group(1)), 0, "trigger"
        elif follow is not None:
            incident_id, number, action = int(follow.group(2)), int(follow.group(3)), follow.group(1)
        else:
            continue
        seen = last.get((incident_id, channel))
        if seen is None or number > seen[0]:
            last[(incident_id, channel)] = (number, action)  # type: ignore[assignment]
    return last


def _states(store: Store, incident_ids: list[int]) -> dict[int, EventAction | None]:
    """Where each incident's alert should stand now, read in one query (not one incident at a time)."""
    where = Where().any_of("id", incident_ids)
    rows = store.query(f"SELECT id, kind, status, resolved_at FROM anomalies {where.sql}", where.params)
    return {int(r[0]): alert_state(r[1], r[2], r[3]) for r in rows}


def _alert(config: Config, incident: Incident, action: EventAction, key: str, full_alert: FullAlert) -> AlertMessage:
    if action == "trigger":  # it came back: the full alert again, under the follow-up's key
        alert = full_alert(incident, config.notify, ())
        return replace(alert, key=key, email=None, event=incident_event(incident, "trigger", alert.title))
    title = f"{incident.severity.upper()} {incident.kind}: {incident.title} is {_WORDS[action]}"
    if action == "acknowledge" and incident.feedback_by:
        title += f" (acknowledged by {incident.feedback_by})"
    return AlertMessage(key, title, {"text": title}, event=incident_event(incident, action, title))
