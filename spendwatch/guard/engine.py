"""One guard pass: poll → price → record → breaches → incidents → kill switch.

``run_guard(config, store, clock, clients=None)`` is what the daemon schedules every ``guard.every``
and what ``spendwatch guard run-once`` calls. The kill switch runs on the open guard incidents only,
right after they are written (same journal, same protection, caps, approval and dry-run default as
every other action), so a breach is acted on within the poll that saw it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from spendwatch.clock import Clock
from spendwatch.collectors.job_records import jobs_table
from spendwatch.guard.breaches import Breach, IncidentChanges, evaluate, record_breaches
from spendwatch.guard.config import GuardConfig
from spendwatch.guard.estimate import Estimate, labels_of, scope_of
from spendwatch.guard.state import WatchState, state_for
from spendwatch.guard.watch import JobSource, Poll, forget_ended, poll, watched_sources
from spendwatch.store import Store
from spendwatch.store.schema import JOB_SCHEMA, JOB_STATES_RUNNING

log = logging.getLogger("spendwatch.guard")
SOURCE_PREFIX = "guard:"


@dataclass
class GuardRun:
    """What one pass saw and did."""

    started_at: datetime
    sources: list[str] = field(default_factory=list)
    poll: Poll | None = None
    breaches: list[Breach] = field(default_factory=list)
    incidents: IncidentChanges = field(default_factory=IncidentChanges)
    killswitch: Any = None  # KillSwitchRun, when the kill switch ran
    ended: int = 0
    seconds: float = 0.0

    @property
    def estimates(self) -> list[Estimate]:
        return self.poll.estimates if self.poll else []

    @property
    def problems(self) -> list[str]:
        return self.poll.problems if self.poll else []

    def summary(self) -> str:
        if not self.sources:
            return "guard: no aws-jobs, gcp-jobs or kubernetes-jobs source to watch"
        calls = sum((self.poll.api_calls if self.poll else {}).values())
        text = (
            f"guard: {len(self.estimates)} running job(s) on {len(self.sources)} source(s), {len(self.breaches)} "
            f"breach(es); incidents {len(self.incidents.opened)} opened, {len(self.incidents.updated)} updated, "
            f"{len(self.incidents.resolved)} resolved; {calls} API call(s) in {self.seconds:.1f}s"
        )
        if self.killswitch is not None:
            text += f"; kill switch: {self.killswitch.summary()}"
        if self.problems:
            text += f"; {len(self.problems)} problem(s)"
        return text


def run_guard(
    config: Any,
    store: Store,
    clock: Clock,
    clients: Mapping[str, Any] | None = None,
    *,
    state: WatchState | None = None,
) -> GuardRun:
    """One guard pass over the root ``Config`` (its ``guard``, ``killswitch`` and job sources)."""
    guard: GuardConfig = config.guard
    return run_guard_pass(
        guard, config.killswitch, watched_sources(config, guard), store, clock, clients=clients, state=state
    )


def run_guard_pass(
    guard: GuardConfig,
    killswitch: Any,
    sources: Sequence[JobSource],
    store: Store,
    clock: Clock,
    *,
    clients: Mapping[str, Any] | None = None,
    state: WatchState | None = None,
) -> GuardRun:
    """One pass with explicit parts (the demo and the benchmark build their own)."""
    began = time.monotonic()
    now = clock.now()
    run = GuardRun(started_at=now, sources=[s.name for s in sources])
    if not sources:
        return run
    clients = dict(clients or {})
    state = state or state_for(str(store.path), guard)
    with state.lock:
        run.poll = poll(guard, list(sources), state, clients=clients, now=now, store=store)
        running = {e.key for e in run.poll.estimates}
        day = _day_start(now, guard.day_timezone)
        wanted = bool(guard.aggregate_scopes("user_daily_cost"))
        rows = day_rows(store, run.poll.estimates, day, now) if wanted else []
        run.breaches = evaluate(guard, run.poll.estimates, rows, day.date().isoformat())
        run.incidents = record_breaches(
            store,
            run.breaches,
            now=now,
            running=running,
            ok_scopes=run.poll.ok_scopes,
            complete=not run.poll.problems,
            reopen_within=guard.reopen_within,
        )
        # Only breaches need the kill switch now (approvals and expiries are the regular pass's work),
        # and it goes first: recording the jobs can wait, a runaway cannot.
        if run.breaches and guard.killswitch and killswitch is not None and killswitch.enabled and killswitch.rules:
            run.killswitch = act(killswitch, store, clock, clients.get("killswitch"), state)
        if guard.record_jobs:
            _record_jobs(store, run.poll.estimates)
            # Only look when something may have ended (or a failed listing left some unconfirmed).
            if state.recorded is None or state.recorded - running or state.unsettled:
                run.ended = _mark_ended(store, running, run.poll.ok_scopes, now)
            state.recorded, state.unsettled = running, bool(run.poll.problems)
        forget_ended(state, running)
    for breach in run.breaches:
        log.info("guard breach: %s", breach.summary, extra={"event": "guard-breach", "limit": breach.limit})
    for problem in run.problems:
        log.warning("guard: %s", problem)
    run.seconds = time.monotonic() - began
    return run


def act(
    killswitch: Any,
    store: Store,
    clock: Clock,
    clients: Mapping[str, Any] | None,
    state: WatchState | None = None,
) -> Any:
    """The kill switch over the open guard incidents (and nothing else: the regular pass covers the rest).

    It runs when something a rule could match on changed since it last ran on these incidents — a new or
    reopened incident, a status or severity change, an impact crossing a rule's ``min_impact`` /
    ``min_impact_pct`` — so a long breach (say a protected job) costs one store read a poll, not a
    kill-switch pass. Returns ``None`` when it had nothing new to look at.
    """
    from spendwatch.detect.incidents import load_incidents
    from spendwatch.killswitch.engine import run_killswitch

    incidents = load_incidents(store, kinds=["guard"], statuses=["open", "ongoing"])
    signatures = {i.id: _signature(i, killswitch) for i in incidents}
    if state is not None and signatures and all(state.acted.get(k) == v for k, v in signatures.items()):
        return None
    run = run_killswitch(killswitch, store, clock, clients=clients, incidents=incidents, jobs=[])
    if state is not None:
        state.acted = signatures
    return run


def _signature(incident: Any, killswitch: Any) -> tuple[Any, ...]:
    impacts = sorted(
        {r.when.incident.min_impact for r in killswitch.rules if r.when.incident and r.when.incident.min_impact}
    )
    shares = sorted(
        {r.when.incident.min_impact_pct for r in killswitch.rules if r.when.incident and r.when.incident.min_impact_pct}
    )
    return (
        incident.status,
        incident.severity,
        sum(incident.impact >= t for t in impacts),
        sum(incident.impact_pct >= t for t in shares),
    )


# -- the jobs table ----------------------------------------------------------------------------------


def _record_jobs(store: Store, estimates: Sequence[Estimate]) -> None:
    by_source: dict[str, list[dict[str, Any]]] = {}
    for item in estimates:
        row = {name: item.record.get(name) for name in JOB_SCHEMA.names}
        by_source.setdefault(item.source, []).append(row)
    for source, rows in by_source.items():
        store.upsert_jobs(f"{SOURCE_PREFIX}{source}", jobs_table(rows))


def _mark_ended(store: Store, running: set[str], ok_scopes: set[str], now: datetime) -> int:
    """Rows the guard wrote as running whose listing succeeded without them: they ended (state ``ENDED``).

    The job sources later replace them with the final state and cost; a row a collector wrote is left alone.
    """
    states = sorted(JOB_STATES_RUNNING)
    rows = store.query(
        f"""SELECT platform, job_id, provider, region_id, sub_account_id FROM jobs
        WHERE source LIKE '{SOURCE_PREFIX}%' AND upper(state) IN ({", ".join("?" * len(states))})""",
        states,
    )
    ended = [
        (platform, job_id)
        for platform, job_id, provider, region, account in rows
        if f"{platform}:{job_id}" not in running and scope_of(provider, platform, region, account, job_id) in ok_scopes
    ]
    if ended:
        with store.transaction() as con:
            con.executemany(
                "UPDATE jobs SET state = 'ENDED', end_time = coalesce(end_time, last_seen), last_seen = ? "
                "WHERE platform = ? AND job_id = ?",
                [[now, platform, job_id] for platform, job_id in ended],
            )
    return len(ended)


def _day_start(now: datetime, zone: str) -> datetime:
    local = now.astimezone(ZoneInfo(zone))
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def day_rows(store: Store, estimates: Sequence[Estimate], day: datetime, now: datetime) -> list[dict[str, Any]]:
    """Jobs that count towards today's per-user totals: finished today (from the store) + running now.

    The running ones are this poll's estimates (they win over the store's copy of the same job).
    """
    current = {e.key: e for e in estimates}
    rows = store.query(
        """
        SELECT platform, job_id, provider, sub_account_id, region_id, name, "user", owner, state, start_time,
               end_time, estimated_cost, billing_currency, resource_id, labels, cost_method, query_text
        FROM jobs
        WHERE coalesce("user", owner) IS NOT NULL AND estimated_cost IS NOT NULL
          AND (end_time >= ? OR (end_time IS NULL AND last_seen >= ?))
        """,
        [day, day],
    )
    names = (
        "platform", "job_id", "provider", "sub_account_id", "region_id", "name", "user", "owner", "state",
        "start_time", "end_time", "estimated_cost", "billing_currency", "resource_id", "labels", "cost_method",
        "query_text",
    )  # fmt: skip
    out: list[dict[str, Any]] = []
    for row in rows:
        record = dict(zip(names, row, strict=True))
        if f"{record['platform']}:{record['job_id']}" in current:
            continue
        if str(record["state"]).upper() in JOB_STATES_RUNNING:
            continue  # a running job no poll confirms now is counted by its own source's next collection
        record["labels"] = labels_of(record["labels"])
        out.append(record)
    for item in estimates:
        if item.cost is not None:
            out.append({**item.record, "estimated_cost": item.cost, "_running": True})
    return out


def guard_interval(config: Any) -> timedelta | None:
    """How often the daemon should run the guard: ``guard.every``, or ``None`` when there is nothing to watch."""
    guard: GuardConfig | None = getattr(config, "guard", None)
    if guard is None or not guard.enabled:
        return None
    return guard.every if watched_sources(config, guard) else None


def guard_job_body(config: Any, store: Store, clock: Clock, clients: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """What the daemon's ``guard`` job does: one pass; returns (its run detail, whether alerts should go now)."""
    run = run_guard(config, store, clock, clients)
    detail: dict[str, Any] = {
        "summary": run.summary(),
        "rows": len(run.estimates),
        "breaches": len(run.breaches),
        "opened": len(run.incidents.opened),
    }
    if run.problems:
        detail["status"] = "partial"
        detail["problems"] = run.problems[:10]
    return detail, bool(run.breaches or run.incidents.resolved)
