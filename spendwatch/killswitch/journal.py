"""The action journal: every action is written before it runs, and every state change is an event.

States (``actions.state``)::

    planned ──► awaiting-approval ──► approved ──► running ──► done ──► undoing ──► undone
       │               │   │                │          │         ▲          │
       │               │   └► rejected      │          └► failed └──────────┘ (undo failed)
       │               └► expired           └► skipped
       ├► running  (enforce)
       └► skipped  (dry-run, protected, re-read changed, circuit breaker, paused …)

Write-ahead: a row is inserted in ``planned`` (with the plan: target, owner, verb, estimated saving
per hour) before anything else; it moves to ``running`` — with the snapshot undo needs — in its own
committed transaction *before* the cloud is called, and to ``done``/``failed`` after. A process
killed in between leaves ``planned`` or ``running`` behind, and the next run reconciles it (see
``engine.reconcile``): a ``running`` action is re-read and marked ``done`` if the target already is
in a done state, re-issued only if the target is still in an origin state (the call never landed),
and marked ``failed`` (never re-run) for hooks, whose outcome cannot be re-read.

Transitions are compare-and-set under the store's exclusive lock: a transition from a state the
row is no longer in raises ``JournalConflict``, so the daemon and a person approving from the CLI
cannot both act.

**Notification contract** (for ``spendwatch.notify``): ``action_events`` is the append-only audit
log — one row per state change, with the actor and a JSON ``detail``. To alert, a consumer calls
``unnotified_actions(store)`` — every action whose current ``state`` differs from its
``notified_state`` (i.e. changed since it was last announced) — sends what it wants (``ActionRecord``
names the owner, target, verb, mode, reason, result/error), then calls
``mark_notified(store, action_id, state)`` with the state it announced. ``mark_notified`` only
records it if the action is still in that state, so a change that raced the send is announced next
time. Transient states (``running``, ``undoing``) may be skipped by a consumer: the next state
follows within the same run. The digest reads ``list_actions(store, since=day_start)``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from spendwatch.errors import NotFoundError, SpendwatchError
from spendwatch.killswitch.base import Target
from spendwatch.store import Connection, Store, Where

STATES: tuple[str, ...] = (
    "planned",
    "awaiting-approval",
    "approved",
    "running",
    "done",
    "failed",
    "undoing",
    "undone",
    "expired",
    "rejected",
    "skipped",
)
FINAL_STATES: frozenset[str] = frozenset({"failed", "undone", "expired", "rejected", "skipped"})
OPEN_STATES: frozenset[str] = frozenset({"planned", "awaiting-approval", "approved", "running", "undoing"})

TRANSITIONS: dict[str, frozenset[str]] = {
    "planned": frozenset({"awaiting-approval", "running", "skipped", "failed"}),
    "awaiting-approval": frozenset({"approved", "rejected", "expired", "skipped"}),
    "approved": frozenset({"running", "skipped", "failed"}),
    "running": frozenset({"done", "failed", "skipped"}),
    "done": frozenset({"undoing"}),
    "undoing": frozenset({"undone", "done"}),
}

_COLUMNS = (
    "id, idempotency_key, rule, anomaly_id, verb, mode, state, provider, resource_type, resource_id, account, "
    "region, owner, reason, saving_per_hour, at_stake, reversible, plan, prior_state, result, error, planned_at, "
    "expires_at, decided_at, decided_by, started_at, finished_at, undone_at, notified_state, updated_at"
)


class JournalConflict(SpendwatchError):
    """The action is no longer in the state the caller expected (someone else moved it)."""


@dataclass(frozen=True)
class ActionRecord:
    """One journaled action, as the CLI, the digest and the notifier read it."""

    id: int
    idempotency_key: str
    rule: str
    anomaly_id: int | None
    verb: str
    mode: str
    state: str
    target: Target
    reason: str
    saving_per_hour: float | None
    at_stake: float | None
    reversible: bool
    plan: Mapping[str, Any]
    prior_state: Mapping[str, Any] | None
    result: Mapping[str, Any] | None
    error: str | None
    planned_at: datetime
    expires_at: datetime | None
    decided_at: datetime | None
    decided_by: str | None
    started_at: datetime | None
    finished_at: datetime | None
    undone_at: datetime | None
    notified_state: str | None
    updated_at: datetime

    @property
    def owner(self) -> str | None:
        return self.target.owner

    @property
    def summary(self) -> str:
        """``stop ec2-instance i-0abc in 123456789012/us-east-1 (owner alice)``."""
        owner = f" (owner {self.target.owner})" if self.target.owner else ""
        return f"{self.verb} {self.target.describe()}{owner}"

    @property
    def outcome(self) -> str | None:
        if self.result is None:
            return None
        return str(self.result.get("summary") or "") or None


@dataclass(frozen=True)
class ActionEvent:
    id: int
    action_id: int
    event_at: datetime
    state: str
    actor: str
    detail: Mapping[str, Any] = field(default_factory=dict)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True)


def _record(row: tuple[Any, ...]) -> ActionRecord:
    plan = _loads(row[17]) or {}
    target_data = dict(plan.get("target") or {})
    target_data.setdefault("provider", row[7])
    target_data.setdefault("resource_type", row[8])
    target_data.setdefault("resource_id", row[9])
    target_data.setdefault("account", row[10])
    target_data.setdefault("region", row[11])
    target_data["owner"] = row[12] or target_data.get("owner")  # the re-read may have named it
    return ActionRecord(
        id=int(row[0]),
        idempotency_key=row[1],
        rule=row[2],
        anomaly_id=row[3],
        verb=row[4],
        mode=row[5],
        state=row[6],
        target=Target.from_dict(target_data),
        reason=row[13],
        saving_per_hour=row[14],
        at_stake=row[15],
        reversible=bool(row[16]),
        plan=plan,
        prior_state=_loads(row[18]),
        result=_loads(row[19]),
        error=row[20],
        planned_at=row[21],
        expires_at=row[22],
        decided_at=row[23],
        decided_by=row[24],
        started_at=row[25],
        finished_at=row[26],
        undone_at=row[27],
        notified_state=row[28],
        updated_at=row[29],
    )


def _fetch(con: Connection, action_id: int) -> ActionRecord | None:
    row = con.execute(f"SELECT {_COLUMNS} FROM actions WHERE id = ?", [action_id]).fetchone()
    return None if row is None else _record(row)


def _event(con: Connection, action_id: int, at: datetime, state: str, actor: str, detail: Mapping[str, Any]) -> None:
    con.execute(
        "INSERT INTO action_events (action_id, event_at, state, actor, detail) VALUES (?, ?, ?, ?, ?)",
        [action_id, at, state, actor, _dumps(dict(detail))],
    )


@dataclass(frozen=True)
class NewAction:
    """What the engine asks the journal to record before anything runs."""

    idempotency_key: str
    rule: str
    anomaly_id: int | None
    verb: str
    mode: str
    target: Target
    reason: str
    reversible: bool
    plan: Mapping[str, Any]


def plan_action(store: Store, new: NewAction, *, now: datetime, actor: str) -> tuple[ActionRecord, bool]:
    """Insert ``new`` in state ``planned`` unless its idempotency key exists; returns (record, created)."""
    target = new.target
    with store.transaction() as con:
        row = con.execute(f"SELECT {_COLUMNS} FROM actions WHERE idempotency_key = ?", [new.idempotency_key]).fetchone()
        if row is not None:
            return _record(row), False
        plan = {**dict(new.plan), "target": target.as_dict()}
        inserted = con.execute(
            """
            INSERT INTO actions (idempotency_key, rule, anomaly_id, verb, mode, state, provider, resource_type,
                                 resource_id, account, region, owner, reason, saving_per_hour, at_stake, reversible,
                                 plan, planned_at, updated_at)
            VALUES (?, ?, ?, ?, ?, 'planned', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            RETURNING id
            """,
            [
                new.idempotency_key,
                new.rule,
                new.anomaly_id,
                new.verb,
                new.mode,
                target.provider,
                target.resource_type,
                target.resource_id,
                target.account,
                target.region,
                target.owner,
                new.reason,
                target.saving_per_hour,
                target.at_stake,
                new.reversible,
                _dumps(plan),
                now,
                now,
            ],
        ).fetchone()
        if inserted is None:  # pragma: no cover - DuckDB always returns the id
            raise JournalConflict("the store did not return the new action's id")
        action_id = int(inserted[0])
        _event(con, action_id, now, "planned", actor, {"reason": new.reason, "mode": new.mode})
        record = _fetch(con, action_id)
    assert record is not None
    return record, True


def transition(
    store: Store,
    action_id: int,
    to_state: str,
    *,
    now: datetime,
    actor: str,
    expect: Iterable[str] | None = None,
    fields: Mapping[str, Any] | None = None,
    detail: Mapping[str, Any] | None = None,
    max_started_per_hour: int | None = None,
) -> ActionRecord:
    """Move an action to ``to_state`` (compare-and-set), update ``fields`` and append the event.

    ``max_started_per_hour`` (for moves to ``running``) re-counts the rolling hour inside the same
    exclusive transaction, so two processes cannot both take the last slot.
    """
    with store.transaction() as con:
        current = _fetch(con, action_id)
        if current is None:
            raise NotFoundError(f"no action with id {action_id} (see `spendwatch actions list`)")
        allowed_from = set(expect) if expect is not None else {s for s, to in TRANSITIONS.items() if to_state in to}
        if current.state not in allowed_from or to_state not in TRANSITIONS.get(current.state, frozenset()):
            raise JournalConflict(f"action {action_id} is {current.state}; it cannot become {to_state}")
        if max_started_per_hour is not None:
            row = con.execute(
                "SELECT count(*) FROM actions WHERE started_at >= ? AND mode <> 'dry-run'",
                [now - timedelta(hours=1)],
            ).fetchone()
            if row is not None and int(row[0]) >= max_started_per_hour:
                raise CapReached(f"circuit breaker: max_actions_per_hour ({max_started_per_hour}) reached")
        updates = {**dict(fields or {}), "state": to_state, "updated_at": now}
        encoded = {
            k: (_dumps(v) if k in ("prior_state", "result") and v is not None else v) for k, v in updates.items()
        }
        assignments = ", ".join(f"{column} = ?" for column in encoded)
        con.execute(f"UPDATE actions SET {assignments} WHERE id = ?", [*encoded.values(), action_id])
        _event(con, action_id, now, to_state, actor, detail or {})
        record = _fetch(con, action_id)
    assert record is not None
    return record


class CapReached(SpendwatchError):
    """The rolling-hour cap was reached while moving an action to ``running``."""


def add_event(
    store: Store, action_id: int, state: str, *, now: datetime, actor: str, detail: Mapping[str, Any]
) -> None:
    """An event that does not change the state (an undo that failed, a reconcile note)."""
    with store.transaction() as con:
        _event(con, action_id, now, state, actor, detail)


def get_action(store: Store, action_id: int) -> ActionRecord:
    with store.read() as con:
        record = _fetch(con, action_id)
    if record is None:
        raise NotFoundError(f"no action with id {action_id} (see `spendwatch actions list`)")
    return record


def list_actions(
    store: Store,
    *,
    states: Iterable[str] | None = None,
    since: datetime | None = None,
    rule: str | None = None,
    limit: int | None = None,
) -> list[ActionRecord]:
    """Journaled actions, newest first; ``since`` keeps those updated at or after it."""
    where = Where().any_of("state", states).at_least("updated_at", since).equal("rule", rule)
    tail = f" LIMIT {int(limit)}" if limit else ""
    rows = store.query(f"SELECT {_COLUMNS} FROM actions {where.sql} ORDER BY id DESC{tail}", where.params)
    return [_record(row) for row in rows]


def action_events(store: Store, action_id: int) -> list[ActionEvent]:
    rows = store.query(
        "SELECT id, action_id, event_at, state, actor, detail FROM action_events WHERE action_id = ? ORDER BY id",
        [action_id],
    )
    return [ActionEvent(int(r[0]), int(r[1]), r[2], r[3], r[4], _loads(r[5]) or {}) for r in rows]


def unnotified_actions(store: Store) -> list[ActionRecord]:
    """Actions whose state changed since a notifier last announced them (oldest first)."""
    rows = store.query(
        f"SELECT {_COLUMNS} FROM actions WHERE notified_state IS NULL OR notified_state <> state ORDER BY id"
    )
    return [_record(row) for row in rows]


def mark_notified(store: Store, action_id: int, state: str) -> bool:
    """Record that ``state`` was announced; ``False`` if the action moved on meanwhile (announce again)."""
    with store.transaction() as con:
        row = con.execute("SELECT state FROM actions WHERE id = ?", [action_id]).fetchone()
        if row is None:
            raise NotFoundError(f"no action with id {action_id}")
        if row[0] != state:
            return False
        con.execute("UPDATE actions SET notified_state = ? WHERE id = ?", [state, action_id])
    return True
