"""Immediate alerts: high-severity incidents and kill-switch events, once per incident/state and channel.

What is announced:

* an incident at or above ``alerts.min_severity`` that is open or ongoing — once per channel, and
  again only if it escalates to a higher severity (key ``incident:<id>:<severity>``);
* a kill-switch action that reached one of ``alerts.action_states`` — once per state (key
  ``action:<id>:<state>``), through the journal's contract: ``unnotified_actions`` lists actions whose
  state changed since last announced, ``mark_notified`` records the state once every channel took it;
* a budget whose month-end forecast crossed it *with its interval* (``will-exceed``: the whole 80%
  interval is over; or ``over``: already spent) — once per budget and month (key
  ``budget:<name>:<YYYY-MM>``), whatever the forecast does later that month.

Who gets what: ``alerts.channels`` / ``alerts.recipients``, plus each route (team) the subject
belongs to — by the route's owner/account globs, or by the team its cost lines carry
(``notify.teams``; a route named ``untagged`` gets what no team claims); a team budget goes to the
team's route. With the action page on (``notify.action_page``), alerts carry its signed links: each
email recipient gets their own copy, each chat channel links bound to it (Slack: buttons, when a
signing secret is configured).

``alerts_sent`` (key, channel) is the dedup ledger; it is written after a channel accepted the alert,
so a crash between the two can repeat one alert (at-least-once; a duplicate chat line is better than
a lost kill-switch notice). Failures go to ``alert_failures`` with the next attempt time
(exponential backoff) and are retried on later runs until the subject is older than ``alerts.max_age``;
the digest lists them.

Channels that track alerts (``Channel.follows_incidents``: PagerDuty) also get each incident's
acknowledge, resolve and re-trigger once they took its trigger (``notify.lifecycle``), through the
same ledger; every alert carries an ``AlertEvent`` (``notify.events``) for them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from spendwatch.clock import Clock
from spendwatch.money import format_money, format_share
from spendwatch.notify.channels import CHANNELS, AlertMessage, Channel, ChannelConfig, ChannelError, build_channel
from spendwatch.notify.chat import ChatLink, ChatMessage, render_chat
from spendwatch.notify.config import NotifyConfig, RouteConfig
from spendwatch.notify.events import action_event, incident_event
from spendwatch.notify.lifecycle import follow_ups
from spendwatch.notify.render import build_email, dedupe_addresses, new_message_id
from spendwatch.notify.teams import incident_parties
from spendwatch.store import Store
from spendwatch.store.records import SEVERITY_ORDER, Incident

if TYPE_CHECKING:
    from spendwatch.config import Config
    from spendwatch.killswitch.journal import ActionRecord
    from spendwatch.notify.budgets import BudgetStatus
    from spendwatch.notify.events import AlertEvent
    from spendwatch.notify.links import AlertLinks
    from spendwatch.notify.teams import TeamMap

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
    # The alert as one channel gets it (its chat links are bound to that channel).
    for_channel: Callable[[ChannelConfig], AlertMessage] | None = None

    def message(self, channel: ChannelConfig) -> AlertMessage:
        return self.for_channel(channel) if self.for_channel is not None else self.alert


# -- building alerts -------------------------------------------------------------------------------


def incident_alert(
    incident: Incident, notify: NotifyConfig, recipients: tuple[str, ...], links: AlertLinks | None = None
) -> AlertMessage:
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
            f"  - {c.dimension}: {c.value} ({format_share(c.share)}, "
            f"{format_money(incident.share_of_impact(c), currency, signed=True)})\n"
            for c in incident.contributors[:5]
        )
        + f"\nDetails: spendwatch anomalies show {incident.id}\nSilence: spendwatch anomalies ack {incident.id}\n"
    )
    key = f"incident:{incident.id}:{incident.severity}"

    def links_text(address: str) -> str:
        assert links is not None
        mine = links.recipient(address)
        return "\n" + mine.text(mine.incident(incident))

    return _alert(
        notify,
        key,
        title,
        chat,
        text,
        recipients,
        links_text if links is not None else None,
        event=incident_event(incident, "trigger", f"{title} — {summary}"),
    )


def action_alert(
    action: ActionRecord, notify: NotifyConfig, recipients: tuple[str, ...], links: AlertLinks | None = None
) -> AlertMessage:
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

    def links_text(address: str) -> str:
        assert links is not None
        mine = links.recipient(address)
        return "\n" + mine.text(mine.action(action))

    return _alert(
        notify,
        key,
        title,
        chat,
        body + "\n",
        recipients,
        links_text if links is not None else None,
        event=action_event(action, title),
    )


def budget_alert(status: BudgetStatus, notify: NotifyConfig, recipients: tuple[str, ...]) -> AlertMessage:
    """A budget the month-end forecast crossed with its interval (or the month already spent)."""
    budget, forecast = status.budget, status.forecast
    currency = budget.currency

    def money(value: float) -> str:
        return format_money(value, currency)

    state = "is already over" if status.state == "over" else "will be over"
    title = f"budget {budget.name} {state} {money(budget.amount)} in {forecast.month}"
    summary = (
        f"month-end forecast {money(forecast.forecast)} (80%: {money(forecast.lower)} – {money(forecast.upper)}); "
        f"{money(forecast.to_date)} spent in {forecast.days_covered} of {forecast.days_in_month} days"
    )
    chat = ChatMessage(
        icon="warning",
        title=title,
        summary=summary,
        lines=(("Scope", budget.scope),),
        footer=f"budget {budget.name}",
        command="spendwatch budgets list",
    )
    text = f"{title}\n\n{summary}\nScope: {budget.scope}\n\nDetails: spendwatch budgets list\n"
    return _alert(notify, status.alert_key, title, chat, text, recipients, None)


def _alert(
    notify: NotifyConfig,
    key: str,
    title: str,
    chat: ChatMessage,
    text: str,
    recipients: tuple[str, ...],
    per_recipient: Callable[[str], str] | None,
    event: AlertEvent | None = None,
) -> AlertMessage:
    """The alert: one email to every recipient, or (``per_recipient`` adds their own links) one each."""
    subject = f"[spendwatch] {title}"
    if per_recipient is None:
        email = _alert_email(notify, subject, text, recipients, key)
        return AlertMessage(key, title, render_chat(chat, "slack"), email, chat, event)
    emails = tuple(
        e for r in recipients if (e := _alert_email(notify, subject, text + per_recipient(r), (r,), key)) is not None
    )
    return AlertMessage(key, title, render_chat(chat, "slack"), None, chat, event, emails)


def with_chat_links(alert: AlertMessage, links: tuple[ChatLink, ...]) -> AlertMessage:
    """``alert`` with action links (or buttons) for one chat channel."""
    if alert.chat is None or not links:
        return alert
    chat = replace(alert.chat, links=links)
    return replace(alert, chat=chat, payload=render_chat(chat, "slack"))


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
    notify: NotifyConfig, owners: list[str | None], accounts: list[str | None], teams: TeamMap | None = None
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(channels, email recipients) for an alert about these owners/accounts: everyone's, plus each
    route whose globs match them or that is the team their cost lines carry."""
    their_teams = set(teams.of_parties(owners, accounts)) if teams is not None else set()
    return _fan_out(notify, [r for r in notify.routes if r.matches(owners, accounts) or r.name in their_teams])


def _fan_out(notify: NotifyConfig, routes: list[RouteConfig]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    channels = list(notify.alerts.channels)
    recipients = list(notify.alerts.recipients)
    for route in routes:
        if route.alerts:
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


def pending_alerts(
    config: Config, store: Store, clock: Clock, *, sent: set[tuple[str, str]] | None = None
) -> list[_Pending]:
    from spendwatch.detect.incidents import load_incidents
    from spendwatch.notify.links import alert_links
    from spendwatch.notify.spend import day_start
    from spendwatch.notify.teams import team_map

    notify: NotifyConfig = config.notify
    horizon = clock.now() - notify.alerts.max_age
    links = alert_links(config, clock)
    incidents = [
        i
        for i in load_incidents(store, statuses=["open", "ongoing"], since=horizon)
        if notify.alerts.wants_severity(i.severity)
    ]
    teams = None
    if notify.routes and (incidents or config.budgets):
        since = day_start(clock.now().date() - timedelta(days=35))
        teams = team_map(notify, store, since=since, column=config.detection.cost_column)
    pending: list[_Pending] = []
    for incident in incidents:
        channels, recipients = _route(notify, *incident_parties(incident), teams)
        if channels:
            alert = incident_alert(incident, notify, recipients, links)
            pending.append(_Pending(alert, channels, incident.last_seen, None, _chat(alert, links, incident, None)))
    pending.extend(_action_alerts(notify, store, horizon, links, teams))
    pending.extend(_budget_alerts(config, store, clock, sent if sent is not None else _sent_keys(store)))
    # Channels that track alerts (PagerDuty) also hear when an incident is acknowledged, over or back.
    pending.extend(_Pending(f.alert, f.channels, f.at) for f in follow_ups(config, store, clock, incident_alert))
    return pending


def _chat(
    alert: AlertMessage, links: AlertLinks | None, incident: Incident | None, action: ActionRecord | None
) -> Callable[[ChannelConfig], AlertMessage] | None:
    if links is None:
        return None

    def for_channel(channel: ChannelConfig) -> AlertMessage:
        mine = links.channel(channel)
        if mine is None:
            return alert
        found = mine.incident(incident) if incident is not None else mine.action(action)
        return with_chat_links(alert, found)

    return for_channel


def _action_alerts(
    notify: NotifyConfig, store: Store, horizon: datetime, links: AlertLinks | None, teams: TeamMap | None
) -> list[_Pending]:
    from spendwatch.killswitch.journal import mark_notified, unnotified_actions

    out = []
    for action in unnotified_actions(store):
        if action.state not in notify.alerts.action_states or action.updated_at < horizon:
            mark_notified(store, action.id, action.state)  # not announced by configuration, or too old
            continue
        channels, recipients = _route(notify, [action.owner], [action.target.account], teams)
        if not channels:
            mark_notified(store, action.id, action.state)
            continue
        alert = action_alert(action, notify, recipients, links)
        out.append(
            _Pending(alert, channels, action.updated_at, (action.id, action.state), _chat(alert, links, None, action))
        )
    return out


def _budget_alerts(config: Config, store: Store, clock: Clock, sent: set[tuple[str, str]]) -> list[_Pending]:
    """Budgets whose forecast for the month crossed them with its interval, as of yesterday (UTC).

    A budget already announced this month on every channel it goes to is not forecast again."""
    from spendwatch.notify.budgets import budget_statuses

    notify: NotifyConfig = config.notify
    as_of = clock.now().astimezone(UTC).date() - timedelta(days=1)
    out = []
    for budget in config.budgets:
        routes = [r for r in notify.routes if budget.team is not None and r.name == budget.team]
        channels, recipients = _fan_out(notify, routes)
        key = f"budget:{budget.name}:{as_of:%Y-%m}"
        if not channels or all((key, name) in sent for name in channels):
            continue
        [status] = budget_statuses([budget], notify, store, as_of, column=config.detection.cost_column)
        if status.state in ("will-exceed", "over"):
            out.append(_Pending(budget_alert(status, notify, recipients), channels, clock.now()))
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
    for item in pending_alerts(config, store, clock, sent=sent):
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
            message = item.message(notify.channel(name))
            if _send_one(channel, message, store, clock, notify, run, stop, failure, item.at):
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
