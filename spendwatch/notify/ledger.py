"""The digest ledger: the ``digests`` table makes each day's digest go out once.

States of one day's row (the ``day`` primary key makes the row the lock)::

    (none) ──claim──► sending ──on_commit──► committing ──250/OK──► sent
                        │                        │
                        │ error before data      │ crash / connection lost during data
                        ▼                        ▼
                      failed ◄─retry due──   on_interrupted_send: assume-sent → unconfirmed (counts as sent)
                        │                                         resend      → claimed again
                        ▼ a newer day is due
                    superseded

* **claim** happens in one exclusive store transaction, so two processes (the daemon and a person
  running ``spendwatch digest``) cannot both claim a day. The claimant is recorded as
  ``host:pid:token`` (token is per process), so a restarted daemon knows at once that a claim
  left by its previous incarnation is dead; a claim from another live process is only taken over
  after ``claim_timeout``.
* **sending** means nothing left the building yet: a dead ``sending`` claim is safely sent again.
* **committing** is written just before the message data goes out (after the SMTP server accepted
  the recipients, or right before the SES call). A crash in that window is the one case nobody
  can decide: the relay may or may not have queued the mail. The default, ``assume-sent``, marks it
  ``unconfirmed`` and counts it as sent — a rare missing digest is recoverable (the next one lists
  everything still open, ``spendwatch digest --date D --force`` resends), a duplicate in every
  inbox is not. ``resend`` sends again with the **same Message-ID**, which Gmail and most
  mailbox stores collapse. Channels that can check (``folder``) settle the question exactly.
* **failed** attempts are retried with exponential backoff until a newer day's digest becomes due;
  the older one is then ``superseded`` (the newer digest covers its days), never sent late.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from spendwatch.clock import Clock
from spendwatch.notify.config import DigestConfig
from spendwatch.store import Connection, Store

DONE_STATUSES = ("sent", "unconfirmed", "superseded")
SENT_STATUSES = ("sent", "unconfirmed")
_TOKEN = uuid.uuid4().hex[:12]


def process_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{_TOKEN}"


@dataclass(frozen=True)
class DigestRow:
    day: date
    status: str
    attempts: int
    message_id: str | None
    claimed_at: datetime | None
    claimed_by: str | None
    sent_at: datetime | None
    next_attempt_at: datetime | None
    error: str | None
    recipients: str | None
    channel: str | None


@dataclass(frozen=True)
class Claim:
    day: date
    message_id: str
    attempt: int


@dataclass(frozen=True)
class ClaimRefused:
    """Why a day's digest is not sent now."""

    day: date
    status: str
    reason: str


_ROW = "day, status, attempts, message_id, claimed_at, claimed_by, sent_at, next_attempt_at, error, recipients, channel"


def _row(values: tuple[Any, ...]) -> DigestRow:
    return DigestRow(*values)


class DigestLedger:
    def __init__(self, store: Store, clock: Clock, config: DigestConfig, *, identity: str | None = None) -> None:
        self.store = store
        self.clock = clock
        self.config = config
        self.identity = identity or process_identity()

    # -- reading ---------------------------------------------------------------------------------

    def get(self, day: date) -> DigestRow | None:
        rows = self.store.query(f"SELECT {_ROW} FROM digests WHERE day = ?", [day])
        return _row(rows[0]) if rows else None

    def last_sent(self, before: date) -> DigestRow | None:
        rows = self.store.query(
            f"SELECT {_ROW} FROM digests WHERE day < ? AND status IN ('sent', 'unconfirmed') ORDER BY day DESC LIMIT 1",
            [before],
        )
        return _row(rows[0]) if rows else None

    def problems_since(self, since: date, before: date) -> list[DigestRow]:
        rows = self.store.query(
            f"SELECT {_ROW} FROM digests WHERE day >= ? AND day < ? "
            "AND (status IN ('failed', 'superseded', 'unconfirmed') OR attempts > 1) ORDER BY day",
            [since, before],
        )
        return [_row(r) for r in rows]

    # -- the state machine -----------------------------------------------------------------------

    def claim(self, day: date, *, channel: str, new_message_id: str, force: bool = False) -> Claim | ClaimRefused:
        """Claim ``day`` for this process, or say why not. ``force`` resends a day already sent."""
        now = self.clock.now()
        with self.store.transaction() as con:
            found = con.execute(f"SELECT {_ROW} FROM digests WHERE day = ?", [day]).fetchone()
            row = _row(found) if found else None
            if row is None:
                con.execute(
                    "INSERT INTO digests (day, status, attempts, message_id, claimed_at, claimed_by, channel, "
                    "report_day, updated_at) VALUES (?, 'sending', 1, ?, ?, ?, ?, ?, ?)",
                    [day, new_message_id, now, self.identity, channel, day - timedelta(days=1), now],
                )
                self._supersede_older(con, day, now)
                return Claim(day, new_message_id, 1)
            refused = self._refusal(con, row, now, force)
            if refused is not None:
                return refused
            message_id = row.message_id or new_message_id
            con.execute(
                "UPDATE digests SET status = 'sending', attempts = attempts + 1, message_id = ?, claimed_at = ?, "
                "claimed_by = ?, channel = ?, next_attempt_at = NULL, updated_at = ? WHERE day = ?",
                [message_id, now, self.identity, channel, now, day],
            )
            self._supersede_older(con, day, now)
            return Claim(day, message_id, row.attempts + 1)

    def _refusal(self, con: Connection, row: DigestRow, now: datetime, force: bool) -> ClaimRefused | None:
        if row.status in ("sending", "committing") and not self.claim_is_dead(row, now):
            return ClaimRefused(row.day, row.status, f"being sent by {row.claimed_by} since {row.claimed_at:%H:%M:%S}")
        if row.status == "committing" and not force and self.config.on_interrupted_send == "assume-sent":
            con.execute(
                "UPDATE digests SET status = 'unconfirmed', sent_at = claimed_at, updated_at = ?, "
                "error = 'interrupted while the message data was being sent; counted as sent' WHERE day = ?",
                [now, row.day],
            )
            return ClaimRefused(row.day, "unconfirmed", "an interrupted send is counted as sent (assume-sent)")
        if force:
            return None
        if row.status in DONE_STATUSES:
            when = f" at {row.sent_at:%Y-%m-%d %H:%M} UTC" if row.sent_at else ""
            return ClaimRefused(row.day, row.status, f"already {row.status}{when}")
        if row.status == "failed" and row.next_attempt_at is not None and row.next_attempt_at > now:
            return ClaimRefused(row.day, "failed", f"next attempt at {row.next_attempt_at:%H:%M:%S} UTC")
        return None

    def claim_is_dead(self, row: DigestRow, now: datetime) -> bool:
        claimant = (row.claimed_by or "").split(":")
        if len(claimant) == 3 and claimant[0] == socket.gethostname():
            if claimant[2] == _TOKEN:
                return False  # this very process holds it
            pid = int(claimant[1]) if claimant[1].isdigit() else -1
            if pid == os.getpid() or not _alive(pid):
                return True  # a previous incarnation (same pid after a restart) or a dead process
        return row.claimed_at is None or now - row.claimed_at > self.config.claim_timeout

    def _supersede_older(self, con: Connection, day: date, now: datetime) -> None:
        con.execute(
            "UPDATE digests SET status = 'superseded', updated_at = ?, next_attempt_at = NULL "
            "WHERE day < ? AND status = 'failed'",
            [now, day],
        )

    def committing(self, claim: Claim) -> None:
        self._set(claim, "UPDATE digests SET status = 'committing', updated_at = ? WHERE day = ? AND claimed_by = ?")

    def sent(self, claim: Claim, *, recipients: str, detail: str) -> None:
        now = self.clock.now()
        with self.store.transaction() as con:
            con.execute(
                "UPDATE digests SET status = 'sent', sent_at = ?, recipients = ?, error = ?, updated_at = ? "
                "WHERE day = ? AND claimed_by = ?",
                [now, recipients, detail or None, now, claim.day, self.identity],
            )

    def unconfirmed(self, claim: Claim, error: str) -> None:
        now = self.clock.now()
        with self.store.transaction() as con:
            con.execute(
                "UPDATE digests SET status = 'unconfirmed', sent_at = ?, error = ?, updated_at = ? "
                "WHERE day = ? AND claimed_by = ?",
                [now, error, now, claim.day, self.identity],
            )

    def failed(self, claim: Claim, error: str) -> datetime:
        now = self.clock.now()
        retry_at = now + self.config.retry.delay(claim.attempt)
        with self.store.transaction() as con:
            con.execute(
                "UPDATE digests SET status = 'failed', error = ?, next_attempt_at = ?, updated_at = ? "
                "WHERE day = ? AND claimed_by = ?",
                [error, retry_at, now, claim.day, self.identity],
            )
        return retry_at

    def release(self, claim: Claim, reason: str) -> None:
        """Give a ``sending`` claim back (e.g. shutting down before anything was sent): retry at once."""
        now = self.clock.now()
        with self.store.transaction() as con:
            con.execute(
                "UPDATE digests SET status = 'failed', error = ?, next_attempt_at = ?, updated_at = ? "
                "WHERE day = ? AND claimed_by = ? AND status = 'sending'",
                [reason, now, now, claim.day, self.identity],
            )

    def settle_interrupted(self, row: DigestRow, delivered: bool) -> None:
        """A channel that can check (``confirm``) said whether an interrupted send arrived."""
        now = self.clock.now()
        status, error = ("sent", "confirmed after an interrupted send") if delivered else ("failed", "interrupted")
        with self.store.transaction() as con:
            con.execute(
                "UPDATE digests SET status = ?, error = ?, sent_at = CASE WHEN ? THEN claimed_at ELSE sent_at END, "
                "next_attempt_at = ?, updated_at = ? WHERE day = ? AND status = 'committing' AND claimed_by = ?",
                [status, error, delivered, now, now, row.day, row.claimed_by],
            )

    def _set(self, claim: Claim, sql: str) -> None:
        with self.store.transaction() as con:
            con.execute(sql, [self.clock.now(), claim.day, self.identity])


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
