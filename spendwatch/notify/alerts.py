"""Immediate alerts: high-severity incidents and kill-switch events, once per incident/state and channel.

What is announced:

* an incident at or above ``alerts.min_severity`` that is open or ongoing — once per channel, and
  again only if it escalates to a higher severity (key ``incident:<id>:<severity>``);
* a kill-switch action that reached one of ``alerts.action_states`` — once per state (key
  ``action:<id>:<state>``), through the journal's contract: ``unnotified_actions`` lists actions whose
  state changed since last announced, ``mark_notified`` records the state once every channel took it.

``alerts_sent`` (key, channel) is the dedup ledger; it is written after a channel accepted the alert,
so a crash between the two can repeat one alert (at-least-once; a duplicate chat line is better than
a lost kill-switch notice). Failures go to ``alert_failures`` with the next attempt time
(exponential backoff) and are retried on later runs until the subject is older than ``alerts.max_age``;
the digest lists them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from spendwatch.clock import Clock
from spendwatch.notify.channels import CHANNELS, AlertMessage, Channel, ChannelError, build_channel
from spendwatch.notify.chat import ChatMessage, render_chat
from spendwatch.notify.config import NotifyConfig
from spendwatch.notify.digest import format_money, incident_parties
from spendwatch.notify.render import build_email, new_message_id
from spendwatch.notify.send import dedupe_addresses
from spendwatch.records import SEVERITY_ORDER, Incident
from spendwatch.store import Store

if TYPE_CHECKING:
    from spendwatch.config import Config
    from spendwatch.killswitch.journal import ActionRecord

log = logging.getLogger("spendwatch.notify.alerts")
_SEVERITY_ICON = {"critical": "rotating_light", "high": "red_circle", "medium": "large_orange_circle"}
_STATE_ICON = {
    "awaiting-approval": "raised_hand",
    "done": "white_check_mark",
    "failed": "x",
    "undone": "leftwards_arrow_with_hook",
}


@dataclass
class AlertRun:
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Pending:
    alert: AlertMessage
    channels: tuple[str, ...]
    at: datetime
    action: tuple[int, str] | None = None


# -- building alerts -------------------------------------------------------------------------------


def incident_alert(incident: Incident, notify: NotifyConfig, recipients: tuple[str, ...]) -> AlertMessage:
    currency = incident.billing_currency
    impact = format_money(incident.impact, currency, signed=True)
    title = f"{incident.severity.upper()} {incident.kind}: {incident.title}"
    culprit = incident.culprit_sentence()
    when = f"{incident.first_seen:%d %b %H:%M} – {incident.last_seen:%d %b %H:%M} UTC"
    # A guard incident's "expected" is the cap the job crossed, not a forecast.
    baseline = "over its cap" if incident.kind == "guard" else "over expected"
    summary = f"{impact} {baseline} ({incident.impact_pct:+.0%}), {when}"
    chat = ChatMessage(
        icon=_SEVERITY_ICON.get(incident.severity, "warning"),
        title=title,
        summary=summary,
        lines=(("Culprit", culprit),),
        footer=f"incident #{incident.id}",
        command=f"spendwatch anomalies show {incident.id}",
    )
    text = (
        f"{title}\n\n{summary}\nCulprit: {culprit}\n\n"
        + "".join(
            f"  - {c.dimension}: {c.value} ({c.share:.0%}, {format_money(c.delta, currency, signed=True)})\n"
            for c in incident.contributors[:5]
        )
        + f"\nDetails: spendwatch anomalies show {incident.id}\nSilence: spendwatch anomalies ack {incident.id}\n"
    )
    key = f"incident:{incident.id}:{incident.severity}"
    email = _alert_email(notify, f"[spendwatch] {title}", text, recipients, key)
    return AlertMessage(key, title, render_chat(chat, "slack"), email, chat)


def action_alert(action: ActionRecord, notify: NotifyConfig, recipients: tuple[str, ...]) -> AlertMessage:
    title = f"kill switch {action.state}: {action.summary}"
    lines = [f"Rule {action.rule} ({action.mode}): {action.reason}"]
    if action.state == "awaiting-approval":
        lines.append(f"Approve with: spendwatch actions approve {action.id}")
    if action.error:
        lines.append(f"Error: {action.error}")
    if action.outcome:
        lines.append(action.outcome)
    if action.saving_per_hour:
        lines.append(f"Saves about {format_money(action.saving_per_hour, action.target.currency)}/hour")
    body = "\n".join(lines)
    chat = ChatMessage(
        icon=_STATE_ICON.get(action.state, "gear"),
        title=title,
        lines=tuple(("", line) for line in lines),
        footer=f"action #{action.id}",
    )
    key = f"action:{action.id}:{action.state}"
    email = _alert_email(notify, f"[spendwatch] {title}", body + "\n", recipients, key)
    return AlertMessage(key, title, render_chat(chat, "slack"), email, chat)


def _alert_email(notify: NotifyConfig, subject: str, text: str, recipients: tuple[str, ...], key: str) -> Any:
    if not recipients:
        return None
    domain = notify.sender.rpartition("@")[2].strip("> ") or None
    return build_email(
        subject=" ".join(subject.split())[:200],
        text=text,
        html=None,
        sender=notify.sender,
        recipients=recipients,
        message_id=new_message_id(domain),
        headers={"X-Spendwatch-Alert": key},
    )


# -- routing ---------------------------------------------------------------------------------------


def _route(
    notify: NotifyConfig, owners: list[str | None], accounts: list[str | None]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(channels, email recipients) for an alert about these owners/accounts."""
    channels = list(notify.alerts.channels)
    recipients = list(notify.alerts.recipients)
    for route in notify.routes:
        if route.alerts and route.matches(owners, accounts):
            channels.extend(route.channels)
            recipients.extend(route.recipients)
    if len(recipients) > len(notify.alerts.recipients) and not any(_sends_email(notify, c) for c in channels):
        digest_channel = notify.digest_channel()
        if digest_channel is not None:
            channels.append(digest_channel.name)
    return tuple(dict.fromkeys(channels)), dedupe_addresses(recipients)


def _sends_email(notify: NotifyConfig, name: str) -> bool:
    return CHANNELS.get(notify.channel(name).type).sends_email


# -- the pass ----------------------------------------------------------------------------------------


def pending_alerts(config: Config, store: Store, clock: Clock) -> list[_Pending]:
    from spendwatch.detect.incidents import load_incidents

    notify: NotifyConfig = config.notify
    horizon = clock.now() - notify.alerts.max_age
    pending: list[_Pending] = []
    for incident in load_incidents(store, statuses=["open", "ongoing"], since=horizon):
        if not notify.alerts.wants_severity(incident.severity):
            continue
        channels, recipients = _route(notify, *incident_parties(incident))
        if channels:
            pending.append(_Pending(incident_alert(incident, notify, recipients), channels, incident.last_seen))
    pending.extend(_action_alerts(notify, store, horizon))
    return pending


def _action_alerts(notify: NotifyConfig, store: Store, horizon: datetime) -> list[_Pending]:
    from spendwatch.killswitch.journal import mark_notified, unnotified_actions

    out = []
    for action in unnotified_actions(store):
        if action.state not in notify.alerts.action_states or action.updated_at < horizon:
            mark_notified(store, action.id, action.state)  # not announced by configuration, or too old
            continue
        channels, recipients = _route(notify, [action.owner], [action.target.account])
        if not channels:
            mark_notified(store, action.id, action.state)
            continue
        alert = action_alert(action, notify, recipients)
        out.append(_Pending(alert, channels, action.updated_at, (action.id, action.state)))
    return out


def run_alerts(
    config: Config,
    store: Store,
    clock: Clock,
    *,
    clients: dict[str, Any] | None = None,
    stop: threading.Event | None = None,
) -> AlertRun:
    """Send every due alert on every channel it has not reached yet."""
    notify: NotifyConfig = config.notify
    run = AlertRun()
    if not notify.alerts.enabled:
        return run
    stop = stop or threading.Event()
    channels: dict[str, Channel] = {}
    sent = _sent_keys(store)
    failures = _failures(store)
    for item in pending_alerts(config, store, clock):
        if item.alert.key.startswith("incident:") and _already_covered(item.alert.key, sent):
            run.skipped += 1
            continue
        settled = True
        for name in item.channels:
            if stop.is_set():
                return run
            if (item.alert.key, name) in sent:
                continue
            failure = failures.get((item.alert.key, name))
            if failure is not None and (failure[1] or failure[2] > clock.now()):
                settled = settled and failure[1]  # given up counts as settled; waiting does not
                continue
            channel = channels.setdefault(name, build_channel(notify.channel(name), clients))
            if _send_one(channel, item.alert, store, clock, notify, run, stop, failure, item.at):
                sent.add((item.alert.key, name))
            else:
                settled = False
        if item.action is not None and settled:
            from spendwatch.killswitch.journal import mark_notified

            mark_notified(store, *item.action)
    return run


def _send_one(
    channel: Channel,
    alert: AlertMessage,
    store: Store,
    clock: Clock,
    notify: NotifyConfig,
    run: AlertRun,
    stop: threading.Event,
    failure: tuple[int, bool, datetime] | None,
    subject_at: datetime,
) -> bool:
    error = ""
    for attempt in range(notify.alerts.retry.quick_attempts):
        try:
            channel.send_alert(alert)
        except ChannelError as exc:
            error = str(exc)
            if not exc.transient or attempt + 1 >= notify.alerts.retry.quick_attempts or stop.is_set():
                break
            stop.wait(min(2.0**attempt, 5.0))
            continue
        with store.transaction() as con:
            con.execute("INSERT OR REPLACE INTO alerts_sent VALUES (?, ?, ?)", [alert.key, channel.name, clock.now()])
            con.execute("DELETE FROM alert_failures WHERE key = ? AND channel = ?", [alert.key, channel.name])
        run.sent += 1
        log.info("alert %s sent via %s", alert.key, channel.name)
        return True
    attempts = (failure[0] if failure else 0) + 1
    now = clock.now()
    given_up = now - subject_at > notify.alerts.max_age
    retry_at = now + notify.alerts.retry.delay(attempts)
    with store.transaction() as con:
        con.execute(
            "INSERT INTO alert_failures VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key, channel) DO UPDATE SET "
            "attempts = excluded.attempts, last_failed_at = excluded.last_failed_at, "
            "next_attempt_at = excluded.next_attempt_at, error = excluded.error, given_up = excluded.given_up",
            [alert.key, channel.name, attempts, now, now, retry_at, error, given_up],
        )
    run.failed += 1
    run.errors.append(f"{alert.key} via {channel.name}: {error}")
    then = "given up" if given_up else f"next attempt at {retry_at:%H:%M:%S} UTC"
    log.warning("alert %s via %s failed (attempt %d): %s; %s", alert.key, channel.name, attempts, error, then)
    return False


def _sent_keys(store: Store) -> set[tuple[str, str]]:
    return {(r[0], r[1]) for r in store.query("SELECT key, channel FROM alerts_sent")}


def _failures(store: Store) -> dict[tuple[str, str], tuple[int, bool, datetime]]:
    rows = store.query("SELECT key, channel, attempts, given_up, next_attempt_at FROM alert_failures")
    return {(r[0], r[1]): (int(r[2]), bool(r[3]), r[4]) for r in rows}


def _already_covered(key: str, sent: Iterable[tuple[str, str]]) -> bool:
    """An incident already alerted at this severity or higher (on any channel) is not re-alerted lower."""
    _, incident_id, severity = key.split(":", 2)
    order = list(SEVERITY_ORDER)
    rank = order.index(severity) if severity in order else -1
    for other, _ in sent:
        parts = other.split(":", 2)
        same_incident = len(parts) == 3 and parts[0] == "incident" and parts[1] == incident_id
        if same_incident and parts[2] in order and order.index(parts[2]) > rank:
            return True
    return False


def recent_alert_failures(store: Store, since: datetime) -> list[str]:
    rows = store.query(
        "SELECT key, channel, attempts, error, given_up FROM alert_failures WHERE last_failed_at >= ? ORDER BY key",
        [since],
    )
    return [
        f"alert {r[0]} via {r[1]}: {r[3]} ({r[2]} attempt(s){', given up' if r[4] else ', still retrying'})"
        for r in rows
    ]
