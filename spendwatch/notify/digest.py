"""The digest model: what one day's email says to one audience, read from the store (never the billing APIs).

A digest is dated by the day it goes out (``day``, in the daemon's timezone) and reports on the
UTC billing day before it (``report_day``). It covers everything since the last digest that was
sent (``since``) up to the end of its own day — an incident seen after that belongs to the next one.

Audiences: the FinOps digest (``digest.recipients``) covers the whole estate and carries a per-team
table; each team with recipients (``notify.routes``) gets its own digest — its spend, its
incidents, the day's costliest jobs of its people and its pending actions (``notify.teams``).

"Expected" spend per provider and account is the median of the same weekday in the four weeks
before — robust to one bad week and to the weekly rhythm, and simple to explain in an email. The
incidents carry the detector's own expected values. The month-end forecast is the seasonal model of
``spendwatch.forecast`` with its 80% interval.

Order: critical first, then new, then the rest by severity and impact; incidents that stopped
alerting below ``digest.collapse_below`` get one line each, so a day of small hourly blips does not
push the card that matters off the first screen.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from spendwatch.clock import Clock
from spendwatch.forecast import MonthForecast
from spendwatch.money import format_money, format_share
from spendwatch.notify.spend import (
    EVERYTHING,
    ChargeRow,
    JobRow,
    Scope,
    SpendRow,
    TeamRow,
    charges,
    day_start,
    month_forecasts,
    report_day_spend,
    team_forecasts,
    team_spend,
    top_jobs,
)
from spendwatch.notify.teams import UNTAGGED, TeamMap, incident_parties, team_map, team_sql
from spendwatch.store import Store
from spendwatch.store.records import SEVERITY_ORDER, Incident, JobLink

if TYPE_CHECKING:
    from spendwatch.config import Config
    from spendwatch.notify.budgets import BudgetStatus

__all__ = [
    "ActionView", "ChargeRow", "Culprit", "Digest", "IncidentView", "JobRow", "SourceFreshness", "SpendRow",
    "TeamRow", "build_digest", "format_money", "incident_parties", "untagged",
]  # fmt: skip

RECENT_STATUSES = ("resolved", "withdrawn", "acknowledged", "expected", "reported")
ACTION_WINDOW_STATES = ("done", "failed", "undone", "expired", "running", "skipped")
FINOPS = "finops"
JOBS_SHOWN = 5
# Dimensions whose single 100% value says nothing the title does not (every BigQuery line is in "US").
_OBVIOUS_WHEN_WHOLE = ("region_id",)


@dataclass(frozen=True)
class Culprit:
    """One named culprit: a person, a job or query, a resource, an account/project."""

    role: str
    name: str
    detail: str = ""
    cost: float | None = None
    query: str | None = None


@dataclass(frozen=True)
class IncidentView:
    incident: Incident
    is_new: bool
    culprits: tuple[Culprit, ...]
    chart_cid: str | None = None
    # Other incidents with the same top job (the same cause seen by other monitors/granularities).
    related: tuple[Incident, ...] = ()
    teams: tuple[str, ...] = ()

    @property
    def title(self) -> str:
        """``account-service: aws / 123 / Amazon S3`` — the monitor says which view of spend moved."""
        incident = self.incident
        dimensions = dict(incident.dimensions)
        job = incident.top_job()
        if incident.kind == "guard":
            # The culprit line names the person; the job by its name, not ``project:LOCATION.id``.
            dimensions.pop("platform", None)
            dimensions.pop("owner", None)
            if job is not None and "job_id" in dimensions:
                dimensions["job_id"] = job.name or job_key(job)[1]
        values = [untagged(v) for v in dimensions.values()]
        return f"{incident.monitor}: {' / '.join(values) if values else 'total'}"

    @property
    def span(self) -> str:
        i = self.incident
        if i.granularity == "daily":
            first, last = f"{i.first_seen:%d %b}", f"{i.last_seen:%d %b}"
            return first if first == last else f"{first} – {last}"
        first, last = f"{i.first_seen:%d %b %H:%M}", f"{i.last_seen:%d %b %H:%M}"
        return f"{first} UTC" if first == last else f"{first} – {last:} UTC"

    @property
    def members(self) -> tuple[Incident, ...]:
        """The card's incident and those with the same cause listed under it."""
        return (self.incident, *self.related)

    @property
    def alerting_ids(self) -> tuple[int, ...]:
        """The card's incidents still alerting: what one click on its Acknowledge button settles."""
        return tuple(i.id for i in self.members if i.is_alerting)

    @property
    def is_alerting(self) -> bool:
        return bool(self.alerting_ids)

    @property
    def severity_rank(self) -> int:
        order = list(SEVERITY_ORDER)
        return order.index(self.incident.severity) if self.incident.severity in order else -1

    @property
    def culprit(self) -> str:
        return self.incident.culprit_sentence()

    @property
    def one_line(self) -> str:
        """``spike · gcp / analytics-warehouse / BigQuery · +$36.34 · 04 Dec 07:00 UTC · resolved``."""
        i = self.incident
        impact = format_money(i.impact, i.billing_currency, signed=True)
        return f"{i.kind} · {untagged_title(i)} · {impact} · {self.span} ({i.granularity}) · {i.status}"


@dataclass(frozen=True)
class ActionView:
    id: int
    verb: str
    state: str
    mode: str
    target: str
    owner: str | None
    account: str | None
    reason: str
    saving_per_hour: float | None
    at_stake: float | None
    when: datetime | None
    error: str | None
    currency: str = "USD"
    outcome: str | None = None
    rule: str = ""


@dataclass(frozen=True)
class SourceFreshness:
    source: str
    type: str
    data_end: datetime | None
    loaded_at: datetime | None
    last_success: datetime | None
    last_error: str | None
    stale: bool
    note: str


@dataclass(frozen=True)
class Digest:
    day: date
    report_day: date
    since: date
    generated_at: datetime
    timezone: str
    providers: tuple[SpendRow, ...]
    accounts: tuple[SpendRow, ...]
    month: tuple[MonthForecast, ...]
    incidents: tuple[IncidentView, ...]
    more_incidents: int
    awaiting_approval: tuple[ActionView, ...]
    actions_taken: tuple[ActionView, ...]
    actions_failed: tuple[ActionView, ...]
    charges: tuple[ChargeRow, ...]
    freshness: tuple[SourceFreshness, ...]
    delivery_problems: tuple[str, ...] = ()
    cost_column: str = "effective_cost"
    skipped_days: tuple[date, ...] = field(default=())
    team: str | None = None
    collapsed: tuple[IncidentView, ...] = ()
    teams: tuple[TeamRow, ...] = ()
    budgets: tuple[BudgetStatus, ...] = ()
    jobs: tuple[JobRow, ...] = ()
    plans: tuple[ActionView, ...] = ()

    @property
    def audience(self) -> str:
        return self.team or FINOPS

    @property
    def alerting(self) -> list[IncidentView]:
        """Cards with an incident still alerting (a card is one cause, whichever monitors saw it)."""
        return [v for v in (*self.incidents, *self.collapsed) if v.is_alerting]

    @property
    def stale_sources(self) -> list[SourceFreshness]:
        return [f for f in self.freshness if f.stale]

    @property
    def budgets_at_risk(self) -> list[BudgetStatus]:
        return [b for b in self.budgets if b.state != "ok"]

    @property
    def headline(self) -> str:
        parts: list[str] = []
        alerting = self.alerting
        if alerting:
            # Monitors overlap (a provider total contains its accounts), so impacts are never summed.
            top = max((i for v in alerting for i in v.members if i.is_alerting), key=lambda i: i.impact)
            largest = format_money(top.impact, top.billing_currency, signed=True)
            count = f"{len(alerting)} open incident{'s' if len(alerting) != 1 else ''}"
            parts.append(f"{count}, the largest {largest} over expected")
        if self.awaiting_approval:
            parts.append(f"{len(self.awaiting_approval)} action(s) awaiting approval")
        if self.actions_failed:
            parts.append(f"{len(self.actions_failed)} action(s) failed")
        over = [b for b in self.budgets if b.state in ("over", "will-exceed")]
        if over:
            parts.append(f"{len(over)} budget(s) forecast over")
        if self.stale_sources:
            parts.append(f"{len(self.stale_sources)} stale source(s)")
        return "; ".join(parts) if parts else "all quiet"

    def incident_owners_and_accounts(self) -> list[tuple[list[str | None], list[str | None]]]:
        """Per incident and action: (owners, accounts) it concerns, for team routing."""
        out: list[tuple[list[str | None], list[str | None]]] = []
        for view in (*self.incidents, *self.collapsed):
            out.append(incident_parties(view.incident))
        for action in (*self.awaiting_approval, *self.actions_taken, *self.actions_failed):
            out.append(([action.owner], [action.account]))
        return out


def untagged(value: str | None) -> str:
    """Attribution reports lines without a value as ``(none)``: say what that means."""
    return "untagged" if value in (None, "", "(none)") else str(value)


def untagged_title(incident: Incident) -> str:
    values = [untagged(v) for v in incident.dimensions.values()]
    return " / ".join(values) if values else incident.monitor


# -- building ---------------------------------------------------------------------------------------


def digest_cutoff(day: date, timezone: str, now: datetime) -> datetime:
    """The end of the digest's own day (local), or now if sooner: later incidents go in the next one."""
    end_of_day = datetime.combine(day + timedelta(days=1), time(0), tzinfo=ZoneInfo(timezone))
    return min(end_of_day, now)


def build_digest(
    config: Config,
    store: Store,
    clock: Clock,
    day: date,
    *,
    since: date | None = None,
    delivery_problems: Sequence[str] = (),
    skipped_days: Sequence[date] = (),
    team: str | None = None,
    teams: TeamMap | None = None,
) -> Digest:
    """The digest going out on ``day`` to FinOps (``team=None``) or one team.

    ``since`` is the first report day it covers (default: the day before).
    """
    from spendwatch.notify.budgets import budget_statuses

    notify = config.notify
    report_day = day - timedelta(days=1)
    since = min(since or report_day, report_day)
    window_start = day_start(since)
    cutoff = digest_cutoff(day, config.daemon.timezone, clock.now())
    column = config.detection.cost_column
    teams = teams or team_map(notify, store, since=day_start(report_day - timedelta(days=35)), column=column)
    scope = _team_scope(config, team)
    providers, accounts = report_day_spend(store, report_day, column, notify.digest.top_accounts, scope)
    views = [v for v in _incident_views(store, window_start, cutoff, teams) if team is None or team in v.teams]
    full, collapsed = _split_views(views, notify.digest.collapse_below)
    shown, folded = full[: notify.digest.max_incidents], collapsed[: notify.digest.max_collapsed]
    actions = [a for a in _actions(store, window_start) if team is None or team in _action_teams(a, teams)]
    budgets = [b for b in config.budgets if team is None or b.team == team]
    return Digest(
        day=day,
        report_day=report_day,
        since=since,
        generated_at=clock.now(),
        timezone=config.daemon.timezone,
        providers=tuple(providers),
        accounts=tuple(accounts),
        month=tuple(_month(config, store, report_day, team)),
        incidents=tuple(shown),
        more_incidents=len(full) - len(shown) + len(collapsed) - len(folded),
        awaiting_approval=tuple(a for a in actions if a.state == "awaiting-approval"),
        actions_taken=tuple(a for a in actions if a.state in ("done", "undone", "running", "expired")),
        actions_failed=tuple(a for a in actions if a.state == "failed"),
        charges=tuple(charges(store, window_start, day_start(day), column, scope)),
        freshness=tuple(source_freshness(config, store, clock)),
        delivery_problems=tuple(delivery_problems),
        cost_column=column,
        skipped_days=tuple(skipped_days),
        team=team,
        collapsed=tuple(folded),
        teams=tuple(_team_rows(config, store, report_day, views, teams)) if team is None else (),
        budgets=tuple(budget_statuses(budgets, notify, store, report_day, column=column)),
        jobs=tuple(_jobs(store, report_day, team, teams)),
        plans=tuple(a for a in actions if a.mode == "dry-run" and a.state == "skipped"),
    )


def _action_teams(action: ActionView, teams: TeamMap) -> tuple[str, ...]:
    return teams.of_parties([action.owner], [action.account])


def _team_scope(config: Config, team: str | None) -> Scope:
    if team is None:
        return EVERYTHING
    expression, params = team_sql(config.notify)
    return f"{expression} = ?", [*params, team]


def _incident_views(store: Store, window_start: datetime, cutoff: datetime, teams: TeamMap) -> list[IncidentView]:
    from spendwatch.detect.incidents import load_incidents

    alerting = load_incidents(store, statuses=["open", "ongoing"])
    recent = load_incidents(store, statuses=RECENT_STATUSES, since=window_start)
    seen: set[int] = set()
    views: list[IncidentView] = []
    for incident in [*alerting, *recent]:
        if incident.id in seen or incident.first_seen >= cutoff or incident.status == "withdrawn":
            continue
        seen.add(incident.id)
        is_new = incident.first_seen >= window_start or (
            incident.created_at is not None and incident.created_at >= window_start
        )
        views.append(
            IncidentView(
                incident, is_new, culprits(incident), chart_cid=f"incident-{incident.id}@spendwatch",
                teams=teams.of_incident(incident),
            )
        )  # fmt: skip
    views.sort(key=_order)
    return _group_by_cause(views)


def _order(view: IncidentView) -> tuple[bool, int, bool, bool, float]:
    """Critical first, then new before old, alerting before settled, then by severity and impact."""
    critical = view.incident.severity == "critical"
    incident = view.incident
    return (not critical, -view.severity_rank, not view.is_new, not incident.is_alerting, -abs(incident.impact))


def _split_views(views: list[IncidentView], collapse_below: str) -> tuple[list[IncidentView], list[IncidentView]]:
    """(cards, one-liners): settled incidents below ``collapse_below`` and drops get one line."""
    order = list(SEVERITY_ORDER)
    limit = order.index(collapse_below)  # type: ignore[arg-type]
    full, collapsed = [], []
    for view in views:
        small = view.severity_rank < limit
        if view.incident.kind == "drop" or (small and not view.is_alerting):
            collapsed.append(view)
        else:
            full.append(view)
    return full, collapsed


def _group_by_cause(views: list[IncidentView]) -> list[IncidentView]:
    """One runaway query shows up in the provider total, its account/service and its owner, daily and
    hourly: list it once (the first, most severe view) and name the other incidents under it."""
    primary: dict[tuple[str, str], int] = {}
    grouped: list[IncidentView] = []
    for view in views:
        job = view.incident.top_job()
        key = job_key(job) if job is not None and view.incident.kind != "drop" else None
        if key is not None and key in primary:
            index = primary[key]
            first = grouped[index]
            grouped[index] = replace(first, related=(*first.related, view.incident))
            continue
        if key is not None:
            primary[key] = len(grouped)
        grouped.append(view)
    return grouped


def job_key(job: JobLink) -> tuple[str, str]:
    """The same job as the guard and the bill name it: BigQuery's ``project:LOCATION.id`` is ``id``."""
    job_id = job.job_id
    if job.platform == "bigquery" and ":" in job_id:
        job_id = job_id.rpartition(".")[2]
    return job.platform, job_id


def culprits(incident: Incident) -> tuple[Culprit, ...]:
    """Who and what: the jobs (the top one with its query), then the telling contributors.

    A contributor's dollars are its share of this incident's impact, so the card adds up. Lines without
    a job tag or resource id are not a culprit, and ``untagged`` owners are left out when job records name the people
    (the bill has no owner tag on BigQuery queries; the job records do); so is a region holding 100%,
    and a job id or resource that only repeats a job listed above it.
    """
    found: list[Culprit] = []
    currency = incident.billing_currency
    listed: set[str] = set()
    for index, job in enumerate(incident.jobs[:3]):
        where = f" in {job.where}" if job.where else ""
        detail = f"{job.what}{where}, by {job.user or 'an unknown principal'}"
        query = None
        if index == 0 and job.query_text:
            query = job.query_text[:400] + ("…" if len(job.query_text) > 400 else "")
        found.append(Culprit("job", job.name or job.job_id, detail, job.cost, query))
        listed.update(v for v in (job.job_id, job.name, job.resource_id) if v)
    named_people = any(job.user for job in incident.jobs)
    shown = 0
    for contributor in incident.contributors:
        if shown == 3:
            break
        unnamed = contributor.value in ("", "(none)")
        no_culprit = contributor.dimension in ("job_id", "resource_id")  # lines without one are many things
        if unnamed and (no_culprit or (named_people and contributor.dimension == "owner")):
            continue
        if contributor.dimension in _OBVIOUS_WHEN_WHOLE and contributor.share >= 0.995:
            continue
        if contributor.dimension in ("job_id", "resource_id") and contributor.value in listed:
            continue
        label = contributor.dimension.replace("_", " ").replace("sub account id", "account")
        delta = format_money(incident.share_of_impact(contributor), currency, signed=True)
        detail = f"{format_share(contributor.share)} of the excess ({delta})"
        found.append(Culprit(label, untagged(contributor.value), detail, incident.share_of_impact(contributor)))
        shown += 1
    return tuple(found)


def _actions(store: Store, window_start: datetime) -> list[ActionView]:
    """Every action awaiting approval, and those that finished, failed, were undone or only planned
    (dry-run) in the window."""
    from spendwatch.killswitch.journal import ActionRecord, list_actions

    def view(record: ActionRecord) -> ActionView:
        target = record.target
        return ActionView(
            id=record.id, verb=record.verb, state=record.state, mode=record.mode, target=target.describe(),
            owner=target.owner, account=target.account, reason=record.reason, saving_per_hour=record.saving_per_hour,
            at_stake=record.at_stake, when=record.finished_at or record.decided_at or record.started_at
            or record.planned_at, error=record.error, currency=target.currency, outcome=record.outcome,
            rule=record.rule,
        )  # fmt: skip

    waiting = list_actions(store, states=["awaiting-approval"], limit=50)
    recent = list_actions(store, states=ACTION_WINDOW_STATES, since=window_start, limit=50)
    return [view(r) for r in [*waiting, *recent]]


def _month(config: Config, store: Store, report_day: date, team: str | None) -> list[MonthForecast]:
    """The month-end forecast per currency: the whole estate's, or the team's (the same numbers as its
    row in the FinOps table)."""
    column = config.detection.cost_column
    if team is None:
        return month_forecasts(store, report_day, column)
    found = team_forecasts(store, report_day, column, team_sql(config.notify))
    return [forecast for (name, _), forecast in found.items() if name == team]


def _team_rows(
    config: Config, store: Store, report_day: date, views: list[IncidentView], teams: TeamMap
) -> list[TeamRow]:
    """Per team (and ``untagged``): yesterday, the month's forecast, its budget, its incidents."""
    notify = config.notify
    column = config.detection.cost_column
    expression = team_sql(notify)
    spend = team_spend(store, report_day, column, expression)
    forecasts = team_forecasts(store, report_day, column, expression)
    budgets = {
        (b.team, b.currency): b.amount for b in config.budgets if b.team and not (b.owners or b.accounts or b.tags)
    }
    with_digest = {r.name for r in notify.routes if r.recipients and r.digest}
    rows = []
    for (team, currency), row in sorted(spend.items(), key=lambda item: (item[0][0] == UNTAGGED, -item[1].actual)):
        forecast = forecasts.get((team, currency))
        if forecast is None:
            continue
        count = sum(1 for v in views if team in v.teams and v.is_alerting)
        rows.append(TeamRow(team, row, forecast, budgets.get((team, currency)), count, team in with_digest))
    return rows


def _jobs(store: Store, report_day: date, team: str | None, teams: TeamMap) -> list[JobRow]:
    jobs = top_jobs(store, report_day)
    if team is not None:
        jobs = [j for j in jobs if team in teams.of_parties([j.user], [j.account])]
    return jobs[:JOBS_SHOWN]


def source_freshness(config: Config, store: Store, clock: Clock) -> list[SourceFreshness]:
    """Per configured source: newest data, last load, last successful collection; stale is a warning."""
    now = clock.now()
    loads = {
        r[0]: (r[1], r[2]) for r in store.query("SELECT source, max(data_end), max(loaded_at) FROM loads GROUP BY 1")
    }
    runs = _last_runs(store)
    out = []
    for source in config.sources:
        if not source.enabled:
            continue
        data_end, loaded_at = loads.get(source.name, (None, None))
        last_ok, last_error = runs.get(f"collect:{source.name}", (None, None))
        limit = source.settle_lag + config.notify.digest.stale_after
        notes = []
        if data_end is None:
            notes.append("no data collected yet")
        elif now - data_end > limit:
            notes.append(f"newest data is {_age(now - data_end)} old")
        if last_error:
            notes.append(f"last collection failed: {last_error}")
        stale = data_end is None or now - data_end > limit
        out.append(
            SourceFreshness(source.name, source.type, data_end, loaded_at, last_ok, last_error, stale, "; ".join(notes))
        )
    return out


def _last_runs(store: Store) -> dict[str, tuple[datetime | None, str | None]]:
    """Per job: the last successful finish, and the error of the latest run if it failed."""
    rows = store.query(
        "SELECT job, max(finished_at) FILTER (WHERE status IN ('ok', 'partial')), "
        "arg_max(CASE WHEN status = 'failed' THEN coalesce(error, 'failed') END, started_at) "
        "FROM runs WHERE finished_at IS NOT NULL GROUP BY job"
    )
    return {r[0]: (r[1], r[2]) for r in rows}


def _age(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.0f} hours"


def digest_summary(digest: Digest) -> dict[str, Any]:
    """A small JSON-able summary (stored with the run, logged)."""
    return {
        "audience": digest.audience,
        "day": digest.day.isoformat(),
        "report_day": digest.report_day.isoformat(),
        "incidents": len(digest.incidents) + len(digest.collapsed) + digest.more_incidents,
        "alerting": len(digest.alerting),
        "awaiting_approval": len(digest.awaiting_approval),
        "stale_sources": [f.source for f in digest.stale_sources],
        "headline": digest.headline,
    }


def dumps(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True)
