"""Sending the digest once: which day is due, claim it in the ledger, build, render, deliver, record.

``send_digest`` is what the daemon's digest job and ``spendwatch digest`` (without ``--to-dir``)
call. It never raises for a delivery problem: it records it (with the next attempt time) and
returns a ``DigestOutcome``; the next scheduler run retries. See ``ledger`` for the crash window.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from email.utils import parseaddr
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from spendwatch.clock import Clock
from spendwatch.config_types import parse_days
from spendwatch.notify.channels import Channel, ChannelError, build_channel
from spendwatch.notify.config import NotifyConfig, effective_notify
from spendwatch.notify.digest import Digest, build_digest
from spendwatch.notify.ledger import Claim, ClaimRefused, DigestLedger, DigestRow
from spendwatch.notify.render import dedupe_addresses, digest_email, new_message_id
from spendwatch.store import Store

if TYPE_CHECKING:
    from spendwatch.config import Config

log = logging.getLogger("spendwatch.notify.digest")
MAX_COVERED_DAYS = 7


@dataclass(frozen=True)
class DigestOutcome:
    day: date
    status: str  # sent | unconfirmed | failed | skipped | busy | disabled | stopped
    message: str
    recipients: tuple[str, ...] = ()
    message_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.status not in ("failed",)


# -- the schedule ------------------------------------------------------------------------------------


def due_day(now: datetime, timezone: str, at: time, days: str = "*") -> date | None:
    """The newest digest day whose send time (``at`` local, on an allowed weekday) has passed."""
    zone = ZoneInfo(timezone)
    local = now.astimezone(zone)
    allowed = parse_days(days)
    for back in range(8):
        day = local.date() - timedelta(days=back)
        if day.weekday() in allowed and datetime.combine(day, at, tzinfo=zone) <= local:
            return day
    return None


# -- recipients --------------------------------------------------------------------------------------


def digest_recipients(notify: NotifyConfig, digest: Digest) -> tuple[str, ...]:
    """Everyone on ``digest.recipients``; with ``digest.teams: false``, also each team whose
    owners/accounts the digest mentions (teams otherwise get their own digest)."""
    addresses = list(notify.digest.recipients)
    if notify.digest.teams:
        return dedupe_addresses(addresses)
    parties = digest.incident_owners_and_accounts()
    for route in notify.routes:
        if route.digest and any(route.matches(owners, accounts) for owners, accounts in parties):
            addresses.extend(route.recipients)
    return dedupe_addresses(addresses)


@dataclass(frozen=True)
class DigestPart:
    """One message of a day's digest: the FinOps digest or a team's, to its recipients."""

    key: str
    digest: Digest
    recipients: tuple[str, ...]


def digest_parts(
    config: Config,
    store: Store,
    clock: Clock,
    day: date,
    *,
    since: date | None = None,
    delivery_problems: Iterable[str] = (),
    skipped_days: Iterable[date] = (),
) -> list[DigestPart]:
    """The FinOps digest (whole estate) and, with ``digest.teams``, one per team that has recipients."""
    from spendwatch.notify.spend import day_start
    from spendwatch.notify.teams import team_map

    notify = effective_notify(config)
    column = config.detection.cost_column
    teams = team_map(notify, store, since=day_start(day - timedelta(days=36)), column=column)
    common: dict[str, Any] = {
        "since": since, "delivery_problems": tuple(delivery_problems), "skipped_days": tuple(skipped_days),
        "teams": teams,
    }  # fmt: skip
    finops = build_digest(config, store, clock, day, **common)
    parts = [DigestPart("finops", finops, digest_recipients(notify, finops) or ("digest@localhost",))]
    if notify.digest.teams:
        for route in notify.routes:
            if route.digest and route.recipients:
                team = build_digest(config, store, clock, day, team=route.name, **common)
                parts.append(DigestPart(f"team:{route.name}", team, dedupe_addresses(route.recipients)))
    return parts


def part_message_id(claim_message_id: str, key: str) -> str:
    """The day's Message-ID for the FinOps part; a stable variant per other part (a resend collapses)."""
    if key == "finops":
        return claim_message_id
    local, _, domain = claim_message_id.strip("<>").partition("@")
    suffix = hashlib.sha256(key.encode()).hexdigest()[:10]
    return f"<{local}.{suffix}@{domain}>"


# -- sending -----------------------------------------------------------------------------------------


def send_digest(
    config: Config,
    store: Store,
    clock: Clock,
    day: date,
    *,
    clients: dict[str, Any] | None = None,
    force: bool = False,
    stop: threading.Event | None = None,
) -> DigestOutcome:
    """Send ``day``'s digest unless it was sent (or is being sent); record the outcome."""
    notify = effective_notify(config)
    channel_config = notify.digest_channel()
    if not notify.digest.enabled or channel_config is None:
        why = "disabled (notify.digest.enabled)" if not notify.digest.enabled else "no email-capable channel"
        return DigestOutcome(day, "disabled", f"digest {why}")
    channel = build_channel(channel_config, clients)
    ledger = DigestLedger(store, clock, notify.digest)
    _settle_interrupted(ledger, channel, day)
    domain = parseaddr(notify.sender)[1].rpartition("@")[2] or None
    claim = ledger.claim(day, channel=channel.name, new_message_id=new_message_id(domain), force=force)
    if isinstance(claim, ClaimRefused):
        status = "busy" if claim.status in ("sending", "committing") else "skipped"
        return DigestOutcome(day, status, f"digest {day}: {claim.reason}")
    if force:
        with store.transaction() as con:
            con.execute("DELETE FROM digest_parts WHERE day = ?", [day])
    try:
        emails = _prepare(config, store, clock, ledger, claim)
    except Exception as exc:
        log.exception("digest %s: could not be built", day)
        retry_at = ledger.failed(claim, f"could not be built: {type(exc).__name__}: {exc}")
        return DigestOutcome(day, "failed", f"digest {day}: could not be built ({exc}); retry at {retry_at:%H:%M} UTC")
    return _deliver(channel, emails, ledger, claim, notify, stop)


def _settle_interrupted(ledger: DigestLedger, channel: Channel, day: date) -> None:
    row = ledger.get(day)
    if row is None or row.status != "committing" or row.message_id is None:
        return
    if not ledger.claim_is_dead(row, ledger.clock.now()):
        return
    verdict = channel.confirm(row.message_id)
    if verdict is not None:
        log.warning("digest %s: an interrupted send was %s", day, "delivered" if verdict else "not delivered")
        ledger.settle_interrupted(row, verdict)


def _prepare(config: Config, store: Store, clock: Clock, ledger: DigestLedger, claim: Claim) -> list[tuple[str, Any]]:
    """(part key, email) for every part of the day's digest not sent yet."""
    from spendwatch.notify.alerts import recent_alert_failures

    notify = effective_notify(config)
    last = ledger.last_sent(claim.day)
    report_day = claim.day - timedelta(days=1)
    since = max(last.day, claim.day - timedelta(days=MAX_COVERED_DAYS)) if last else report_day
    skipped = [since + timedelta(days=k) for k in range(1, (claim.day - since).days)] if last else []
    problems = [_describe_problem(r) for r in ledger.problems_since(since, claim.day)]
    problems += recent_alert_failures(store, datetime.combine(since, time(0), tzinfo=clock.now().tzinfo))
    done = sent_parts(store, claim.day)
    emails = []
    for part in digest_parts(
        config, store, clock, claim.day, since=since, delivery_problems=problems, skipped_days=skipped
    ):
        for key, recipients, links in _per_recipient(config, part, clock):
            if key in done:
                continue
            email, _ = digest_email(
                part.digest,
                subject_template=notify.digest.subject,
                sender=notify.sender,
                recipients=recipients,
                message_id=part_message_id(claim.message_id, key),
                charts=notify.digest.charts,
                links=links,
            )
            emails.append((key, email))
    return emails


def _per_recipient(config: Config, part: DigestPart, clock: Clock) -> list[tuple[str, tuple[str, ...], Any]]:
    """Signed links are bound to one recipient: with the action page on, each gets their own message."""
    from spendwatch.notify.links import links_for, signer_for

    signer = signer_for(config, clock=clock)
    if signer is None:
        return [(part.key, part.recipients, None)]
    per = [(address, links_for(config, address, signer=signer)) for address in part.recipients]
    if not per or per[0][1] is None:
        return [(part.key, part.recipients, None)]
    return [(f"{part.key}:{parseaddr(address)[1].lower()}", (address,), links) for address, links in per]


def sent_parts(store: Store, day: date) -> set[str]:
    return {str(r[0]) for r in store.query("SELECT part FROM digest_parts WHERE day = ?", [day])}


def _record_part(store: Store, clock: Clock, day: date, key: str, email: Any, accepted: Iterable[str]) -> None:
    with store.transaction() as con:
        con.execute(
            "INSERT OR REPLACE INTO digest_parts VALUES (?, ?, ?, ?, ?)",
            [day, key, email.message_id, ", ".join(accepted), clock.now()],
        )


def _describe_problem(row: DigestRow) -> str:
    return f"digest {row.day}: {row.status} after {row.attempts} attempt(s){': ' + row.error if row.error else ''}"


def _deliver(
    channel: Channel,
    emails: list[tuple[str, Any]],
    ledger: DigestLedger,
    claim: Claim,
    notify: NotifyConfig,
    stop: threading.Event | None,
) -> DigestOutcome:
    """Send every part; a failed part fails the day (retried later, parts already sent are skipped)."""
    day = claim.day
    stop = stop or threading.Event()
    accepted: list[str] = []
    refused: list[str] = []
    for key, email in emails:
        outcome = _deliver_one(channel, email, ledger, claim, notify, stop)
        if isinstance(outcome, DigestOutcome):
            return outcome
        _record_part(ledger.store, ledger.clock, day, key, email, outcome.accepted)
        accepted.extend(outcome.accepted)
        refused.extend(f"{r} refused: {why}" for r, why in outcome.refused.items())
    ledger.sent(claim, recipients=", ".join(accepted), detail="; ".join(refused))
    log.info("digest %s sent via %s to %s", day, channel.name, ", ".join(accepted))
    parts = f" in {len(emails)} messages" if len(emails) > 1 else ""
    return DigestOutcome(day, "sent", f"digest {day} sent via {channel.name}{parts}", tuple(accepted), claim.message_id)


def _deliver_one(
    channel: Channel,
    email: Any,
    ledger: DigestLedger,
    claim: Claim,
    notify: NotifyConfig,
    stop: threading.Event,
) -> Any:
    """The channel's ``Delivery``, or the day's ``DigestOutcome`` when this part could not go out."""
    day = claim.day
    error = "not attempted"
    for attempt in range(notify.digest.retry.quick_attempts):
        if stop.is_set():
            ledger.release(claim, "shutting down before sending")
            return DigestOutcome(day, "stopped", f"digest {day}: not sent, shutting down (retried on next start)")
        try:
            return channel.send_email(email, on_commit=lambda: ledger.committing(claim))
        except ChannelError as exc:
            error = str(exc)
            if exc.maybe_delivered and notify.digest.on_interrupted_send == "assume-sent":
                ledger.unconfirmed(claim, f"{error}; counted as sent (assume-sent)")
                log.warning("digest %s: %s; counted as sent (on_interrupted_send: assume-sent)", day, error)
                return DigestOutcome(day, "unconfirmed", f"digest {day}: {error}", email.recipients, claim.message_id)
            log.warning("digest %s: attempt %d failed: %s", day, claim.attempt, error)
            if not exc.transient or attempt + 1 >= notify.digest.retry.quick_attempts:
                break
            stop.wait(min(2.0**attempt, 10.0))
    retry_at = ledger.failed(claim, error)
    return DigestOutcome(day, "failed", f"digest {day}: {error}; next attempt at {retry_at:%Y-%m-%d %H:%M} UTC")
