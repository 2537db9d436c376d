"""The demo's runaway query, replayed poll by poll through the real guard and kill switch.

``replay_runaway(store, clock, config)`` takes the simulated estate's runaway BigQuery job
(``bquxjob_7f3a2c91_runaway``: dana.kim@example.com's cross join, 1,344 TiB in three hours yesterday
from 14:00) and replays its three hours with a fake clock, one guard poll every ``every`` (60 s), against
an in-process BigQuery (``simulated.SimulatedBigQuery``) whose processed bytes grow as the job's did:

* **dry-run** (the default a fresh install has), in the demo's store: the guard opens the incident
  and the kill switch journals a dry-run ``cancel``; nothing is changed, the query runs on to its end
  (one last poll after it finished resolves the incident with its full cost);
* **enforce**, in a scratch store: the same poll cancels the query through the journal.

Each replay reports when the job crossed the cap (from its byte rate), the poll that caught it, what
was planned and what was cancelled. ``GuardDemoResult.lines()`` is what ``spendwatch demo`` prints.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from spendwatch.collectors.estate import ACCOUNTS
from spendwatch.collectors.gcp.jobs import GcpJobsConfig
from spendwatch.collectors.gcp.prices import TIB
from spendwatch.collectors.simulated import SimulatedEstate
from spendwatch.guard.config import GuardConfig, GuardMatch, GuardRule, Limits
from spendwatch.guard.engine import run_guard_pass
from spendwatch.guard.simulated import SimulatedBigQuery, SimulatedQuery
from spendwatch.guard.state import WatchState
from spendwatch.killswitch.config import IncidentWhen, KillSwitchConfig, Rule, When
from spendwatch.store import Store

RUNAWAY_JOB = "bquxjob_7f3a2c91_runaway"
RUNAWAY_TIB = 1344
RUNAWAY_SECONDS = 3 * 3600 - 60
PRICE_PER_TIB = 6.25
GUARD_NAME = "runaway-queries"
RULE_NAME = "guard-cancel-runaway-queries"
_FALLBACK_QUERY = "SELECT e.*, s.* FROM analytics.events e JOIN analytics.sessions s ON TRUE"


class _ReplayClock:
    def __init__(self, start: datetime) -> None:
        self._now = start

    def now(self) -> datetime:
        return self._now

    def advance(self, step: timedelta) -> None:
        self._now += step


@dataclass(frozen=True)
class ReplayOutcome:
    """One replay (dry-run or enforce) of the runaway query."""

    mode: str
    crossed_at: datetime
    caught_at: datetime | None
    incident_id: int | None
    cost_when_caught: float | None
    projected_when_caught: float | None
    planned: tuple[str, ...]  # "<state>: <summary>" of each journaled action
    cancelled_at: datetime | None
    final_cost: float
    polls: int

    @property
    def latency(self) -> timedelta | None:
        return None if self.caught_at is None else self.caught_at - self.crossed_at


@dataclass(frozen=True)
class GuardDemoResult:
    job_id: str
    user: str
    project: str
    cap: float
    every: timedelta
    dry_run: ReplayOutcome
    enforce: ReplayOutcome

    @property
    def caught_within_a_minute(self) -> bool:
        return all(o.latency is not None and o.latency <= timedelta(minutes=1) for o in (self.dry_run, self.enforce))

    def lines(self) -> list[str]:
        d, e = self.dry_run, self.enforce
        head = (
            f"runaway guard: {self.user}'s BigQuery query {self.job_id} ({self.project}) crossed the "
            f"${self.cap:,.0f} per-job cap at {d.crossed_at:%H:%M:%S} UTC"
        )
        if d.caught_at is None or e.caught_at is None:
            return [head, "  NOT caught by the guard (this is a bug)"]
        assert d.latency is not None
        return [
            head,
            f"  caught at {d.caught_at:%H:%M:%S} UTC by the next {int(self.every.total_seconds())} s poll "
            f"({int(d.latency.total_seconds())} s after crossing): guard incident #{d.incident_id}, "
            f"${d.cost_when_caught or 0:,.2f} so far, projected ${d.projected_when_caught or 0:,.2f}",
            f"  dry-run (the default): {'; '.join(d.planned) or 'no action planned'} — nothing changed; "
            f"it ran on and billed ${d.final_cost:,.2f}",
            f"  enforce (a local stand-in for BigQuery): cancelled at "
            f"{e.cancelled_at:%H:%M:%S} UTC — billed ${e.final_cost:,.2f} instead of ${d.final_cost:,.2f}"
            if e.cancelled_at is not None
            else "  enforce: NOT cancelled (this is a bug)",
        ]


def replay_runaway(
    store: Store,
    clock: Any,
    config: Any,
    *,
    every: timedelta = timedelta(seconds=60),
    cap: float = 500.0,
    enforce_store: Store | None = None,
) -> GuardDemoResult:
    """Replay the simulated runaway query through the guard, in dry-run (``store``) and enforce (a scratch store)."""
    estate = SimulatedEstate(7, 30, clock.now())
    runaway = estate.scenario[0]
    project = ACCOUNTS["gwh"].account_id
    user = runaway.culprit_user or "dana.kim@example.com"
    start = runaway.start
    text = _query_text(store) or _FALLBACK_QUERY
    crossed = start + timedelta(seconds=RUNAWAY_SECONDS * (cap / PRICE_PER_TIB) / RUNAWAY_TIB)
    spec = (project, user, start, text)
    dry = _replay("dry-run", store, config, spec, crossed, every, cap)
    if enforce_store is None:
        with tempfile.TemporaryDirectory(prefix="spendwatch-guard-demo-") as folder:
            scratch = Store(Path(folder) / "enforce.duckdb", clock=clock)
            enforce = _replay("enforce", scratch, config, spec, crossed, every, cap)
    else:
        enforce = _replay("enforce", enforce_store, config, spec, crossed, every, cap)
    return GuardDemoResult(RUNAWAY_JOB, user, project, cap, every, dry, enforce)


def _query_text(store: Store) -> str | None:
    rows = store.query("SELECT query_text FROM jobs WHERE platform = 'bigquery' AND job_id = ?", [RUNAWAY_JOB])
    return str(rows[0][0]) if rows and rows[0][0] else None


def _guard(every: timedelta, cap: float) -> GuardConfig:
    off = Limits(job_cost=None, job_projected_cost=None, user_daily_cost=None, project_burn_rate=None)
    rule = GuardRule(name=GUARD_NAME, match=GuardMatch(platforms=["bigquery"]), job_cost=cap)
    return GuardConfig(every=every, defaults=off, guards=[rule], record_jobs=False)


def _killswitch(config: Any, mode: str) -> KillSwitchConfig:
    rule = Rule(
        name=RULE_NAME,
        description="the demo: cancel a BigQuery query the runaway guard caught",
        when=When(incident=IncidentWhen(kinds=["guard"], monitors=[f"guard:{GUARD_NAME}"])),
        do="cancel",
        resource_types=["bigquery-job"],
        how=mode,  # type: ignore[arg-type]
        allow_irreversible=True,
    )
    base = getattr(config, "killswitch", None) or KillSwitchConfig()
    return base.model_copy(update={"enabled": True, "rules": [rule]})


def _replay(
    mode: str,
    store: Store,
    config: Any,
    spec: tuple[str, str, datetime, str],
    crossed: datetime,
    every: timedelta,
    cap: float,
) -> ReplayOutcome:
    project, user, start, text = spec
    clock = _ReplayClock(start)
    bigquery = SimulatedBigQuery(clock, project)
    end = start + timedelta(seconds=RUNAWAY_SECONDS)
    bigquery.add(SimulatedQuery(project, RUNAWAY_JOB, user, text, start, end, RUNAWAY_TIB * TIB))
    source = GcpJobsConfig.model_validate(
        {
            "name": "simulated-bigquery",
            "type": "gcp-jobs",
            "projects": [project],
            "gcp": {"project": project, "anonymous": True},
            "vertex": {"enabled": False},
            "dataproc": {"enabled": False},
        }
    )
    guard = _guard(every, cap)
    killswitch = _killswitch(config, mode)
    clients = {source.name: {"bigquery_client": bigquery}, "killswitch": {"gcp:bigquery": bigquery}}
    state = WatchState.new(guard)
    caught: tuple[datetime, int, float | None, float | None] | None = None
    polls = 0
    while clock.now() <= end:
        clock.advance(every)
        run = run_guard_pass(guard, killswitch, [source], store, clock, clients=clients, state=state)
        polls += 1
        if caught is None and run.incidents.opened:
            item = next((e for e in run.estimates if e.record["job_id"].endswith(RUNAWAY_JOB)), None)
            caught = (
                clock.now(),
                run.incidents.opened[0],
                item.cost if item else None,
                item.projected if item else None,
            )
        if caught is not None and clock.now() >= caught[0] + 2 * every:
            break
    if caught is not None and not bigquery.cancels:
        # Nobody stopped it: fast-forward to its last minute (the incident grows to its full cost) and
        # past its end (the incident resolves), as the polls in between would have.
        for moment in (end - every / 2, end + every):
            clock.advance(max(moment - clock.now(), timedelta(0)))
            state.previous.clear()  # no burn rate across the jump
            run_guard_pass(guard, killswitch, [source], store, clock, clients=clients, state=state)
            polls += 1
    query = bigquery.queries[(project, RUNAWAY_JOB)]
    final = query.processed(query.cancelled_at or end) / TIB * PRICE_PER_TIB
    return ReplayOutcome(
        mode=mode,
        crossed_at=crossed,
        caught_at=caught[0] if caught else None,
        incident_id=caught[1] if caught else None,
        cost_when_caught=caught[2] if caught else None,
        projected_when_caught=caught[3] if caught else None,
        planned=_planned(store, caught[1] if caught else None),
        cancelled_at=bigquery.cancels[0].at if bigquery.cancels else None,
        final_cost=final,
        polls=polls,
    )


def _planned(store: Store, incident_id: int | None) -> tuple[str, ...]:
    if incident_id is None:
        return ()
    from spendwatch.killswitch.journal import list_actions

    found = [a for a in list_actions(store) if a.anomaly_id == incident_id]
    return tuple(
        f"action #{a.id} journaled as dry-run ('would {a.verb} {a.target.resource_type} {a.target.resource_id}')"
        if a.mode == "dry-run"
        else f"action #{a.id} {a.mode} {a.verb} {a.target.resource_id}: {a.state}"
        for a in found
    )
