"""The digest model: what one day's email says, read from the store (never from the billing APIs).

A digest is dated by the day it goes out (``day``, in the daemon's timezone) and reports on the
UTC billing day before it (``report_day``). It covers everything since the last digest that was
sent (``since``), so a day the daemon was down is folded into the next digest, not lost.

"Expected" spend per provider and account is the median of the same weekday in the four weeks
before — robust to one bad week and to the weekly rhythm, and simple to explain in an email. The
incidents carry the detector's own expected values. Month-end forecast = month-to-date + the mean
of the last seven complete days × the days left.
"""

from __future__ import annotations

import calendar
import json
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from spendwatch.clock import Clock
from spendwatch.records import SEVERITY_ORDER, Incident
from spendwatch.store import Store

if TYPE_CHECKING:
    from spendwatch.config import Config

RECENT_STATUSES = ("resolved", "withdrawn", "acknowledged", "expected", "reported")
ACTION_WINDOW_STATES = ("done", "failed", "undone", "expired", "running")


@dataclass(frozen=True)
class SpendRow:
    """Spend on the report day for a provider (or one account) in one currency, against expected."""

    provider: str
    currency: str
    actual: float
    expected: float | None
    account_id: str | None = None
    account_name: str | None = None

    @property
    def delta(self) -> float | None:
        return None if self.expected is None else self.actual - self.expected

    @property
    def delta_pct(self) -> float | None:
        if self.expected is None or abs(self.expected) < 0.005:
            return None
        return (self.actual - self.expected) / abs(self.expected)

    @property
    def label(self) -> str:
        if self.account_id is None:
            return self.provider
        if self.account_name and self.account_name != self.account_id:
            return f"{self.account_name} ({self.account_id})"
        return self.account_id


@dataclass(frozen=True)
class MonthToDate:
    currency: str
    month: str
    to_date: float
    forecast: float
    days_covered: int
    days_in_month: int


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

    @property
    def title(self) -> str:
        """``account-service: aws / 123 / Amazon S3`` — the monitor says which view of spend moved."""
        values = [untagged(v) for v in self.incident.dimensions.values()]
        return f"{self.incident.monitor}: {' / '.join(values) if values else 'total'}"

    @property
    def span(self) -> str:
        i = self.incident
        if i.granularity == "daily":
            first, last = f"{i.first_seen:%d %b}", f"{i.last_seen:%d %b}"
            return first if first == last else f"{first} – {last}"
        return f"{i.first_seen:%d %b %H:%M} – {i.last_seen:%d %b %H:%M} UTC"

    @property
    def severity_rank(self) -> int:
        order = list(SEVERITY_ORDER)
        return order.index(self.incident.severity) if self.incident.severity in order else -1


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


@dataclass(frozen=True)
class ChargeRow:
    provider: str
    category: str
    service: str | None
    account: str | None
    currency: str
    amount: float


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
    month: tuple[MonthToDate, ...]
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

    @property
    def alerting(self) -> list[IncidentView]:
        return [v for v in self.incidents if v.incident.is_alerting]

    @property
    def stale_sources(self) -> list[SourceFreshness]:
        return [f for f in self.freshness if f.stale]

    @property
    def headline(self) -> str:
        parts: list[str] = []
        alerting = self.alerting
        if alerting:
            # Monitors overlap (a provider total contains its accounts), so impacts are never summed.
            top = max(alerting, key=lambda v: v.incident.impact).incident
            largest = format_money(top.impact, top.billing_currency, signed=True)
            count = f"{len(alerting)} open incident{'s' if len(alerting) != 1 else ''}"
            parts.append(f"{count}, the largest {largest} over expected")
        if self.awaiting_approval:
            parts.append(f"{len(self.awaiting_approval)} action(s) awaiting approval")
        if self.actions_failed:
            parts.append(f"{len(self.actions_failed)} action(s) failed")
        if self.stale_sources:
            parts.append(f"{len(self.stale_sources)} stale source(s)")
        return "; ".join(parts) if parts else "all quiet"

    def incident_owners_and_accounts(self) -> list[tuple[list[str | None], list[str | None]]]:
        """Per incident and action: (owners, accounts) it concerns, for team routing."""
        out: list[tuple[list[str | None], list[str | None]]] = []
        for view in self.incidents:
            out.append(incident_parties(view.incident))
        for action in (*self.awaiting_approval, *self.actions_taken, *self.actions_failed):
            out.append(([action.owner], [action.account]))
        return out


def untagged(value: str | None) -> str:
    """Attribution reports lines without a value as ``(none)``: say what that means."""
    return "untagged" if value in (None, "", "(none)") else str(value)


def incident_parties(incident: Incident) -> tuple[list[str | None], list[str | None]]:
    """The owners and accounts an incident concerns: its own dimensions, top contributors and jobs."""
    owners: list[str | None] = [incident.dimensions.get("owner")]
    accounts: list[str | None] = [incident.dimensions.get("sub_account_id")]
    for contributor in incident.contributors[:5]:
        if contributor.dimension == "owner":
            owners.append(contributor.value)
        elif contributor.dimension == "sub_account_id":
            accounts.append(contributor.value)
    for job in incident.jobs[:5]:
        owners.append(job.user)
        accounts.append(job.sub_account_id)
    return owners, accounts


_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥"}


def format_money(amount: float, currency: str, *, signed: bool = False) -> str:
    sign = "+" if signed and amount > 0 else ("−" if amount < 0 else "")
    value = abs(amount)
    digits = 0 if value >= 10_000 else 2
    number = f"{value:,.{digits}f}"
    symbol = _SYMBOLS.get(currency)
    return f"{sign}{symbol}{number}" if symbol else f"{sign}{number} {currency}"


# -- building ---------------------------------------------------------------------------------------


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def build_digest(
    config: Config,
    store: Store,
    clock: Clock,
    day: date,
    *,
    since: date | None = None,
    delivery_problems: Sequence[str] = (),
    skipped_days: Sequence[date] = (),
) -> Digest:
    """The digest going out on ``day``; ``since`` is the first report day it covers (default: the day before)."""
    from spendwatch.detect.incidents import load_incidents

    notify = config.notify
    report_day = day - timedelta(days=1)
    since = min(since or report_day, report_day)
    window_start = _day_start(since)
    column = config.detection.cost_column
    providers, accounts = _spend(store, report_day, column, notify.digest.top_accounts)
    alerting = load_incidents(store, statuses=["open", "ongoing"])
    recent = load_incidents(store, statuses=RECENT_STATUSES, since=window_start)
    views = _incident_views(alerting, recent, window_start)
    shown = views[: notify.digest.max_incidents]
    actions = _actions(store, window_start)
    return Digest(
        day=day,
        report_day=report_day,
        since=since,
        generated_at=clock.now(),
        timezone=config.daemon.timezone,
        providers=tuple(providers),
        accounts=tuple(accounts),
        month=tuple(_month_to_date(store, report_day, column)),
        incidents=tuple(shown),
        more_incidents=len(views) - len(shown),
        awaiting_approval=tuple(a for a in actions if a.state == "awaiting-approval"),
        actions_taken=tuple(a for a in actions if a.state in ("done", "undone", "running", "expired")),
        actions_failed=tuple(a for a in actions if a.state == "failed"),
        charges=tuple(_charges(store, window_start, _day_start(day), column)),
        freshness=tuple(source_freshness(config, store, clock)),
        delivery_problems=tuple(delivery_problems),
        cost_column=column,
        skipped_days=tuple(skipped_days),
    )


def _spend(store: Store, report_day: date, column: str, top: int) -> tuple[list[SpendRow], list[SpendRow]]:
    """Report-day usage per provider and per account, against the same weekday of the 4 weeks before."""
    days = [report_day - timedelta(days=7 * k) for k in range(5)]
    rows = store.query(
        f"SELECT CAST(date_trunc('day', charge_period_start) AS DATE) AS day, provider, sub_account_id, "
        f"any_value(sub_account_name), billing_currency, sum({column}) FROM cost_lines "
        f"WHERE charge_category = 'Usage' AND CAST(date_trunc('day', charge_period_start) AS DATE) IN "
        f"({', '.join('?' * len(days))}) GROUP BY ALL",
        list(days),
    )
    per_account: dict[tuple[str, str | None, str], dict[date, float]] = defaultdict(dict)
    names: dict[tuple[str, str | None, str], str | None] = {}
    for day, provider, account, name, currency, cost in rows:
        key = (provider, account, currency)
        per_account[key][day] = float(cost)
        names[key] = name or names.get(key)
    per_provider: dict[tuple[str, str], dict[date, float]] = defaultdict(lambda: defaultdict(float))
    for (provider, _, currency), series in per_account.items():
        for day, cost in series.items():
            per_provider[(provider, currency)][day] += cost

    def expected(series: dict[date, float]) -> float | None:
        history = [series.get(d, 0.0) for d in days[1:] if any(d in s for s in per_account.values())]
        return statistics.median(history) if history else None

    providers = [
        SpendRow(provider, currency, series.get(report_day, 0.0), expected(series))
        for (provider, currency), series in sorted(per_provider.items())
    ]
    accounts = [
        SpendRow(provider, currency, series.get(report_day, 0.0), expected(series), account, names.get(key))
        for key, series in per_account.items()
        for provider, account, currency in [key]
        if series.get(report_day, 0.0) > 0 or (expected(series) or 0) > 0
    ]
    accounts.sort(key=lambda r: (r.provider, -r.actual))
    top_accounts: list[SpendRow] = []
    counts: dict[str, int] = defaultdict(int)
    for row in accounts:
        if counts[row.provider] < top:
            top_accounts.append(row)
            counts[row.provider] += 1
    return providers, top_accounts


def _month_to_date(store: Store, report_day: date, column: str) -> list[MonthToDate]:
    first = report_day.replace(day=1)
    end = _day_start(report_day + timedelta(days=1))
    days_in_month = calendar.monthrange(report_day.year, report_day.month)[1]
    rows = store.query(
        f"SELECT billing_currency, sum({column}), "
        f"sum(CASE WHEN charge_category = 'Usage' AND charge_period_start >= ? THEN {column} ELSE 0 END) "
        f"FROM cost_lines WHERE charge_period_start >= ? AND charge_period_start < ? GROUP BY ALL ORDER BY 1",
        [end - timedelta(days=7), _day_start(first), end],
    )
    out = []
    covered = report_day.day
    remaining = days_in_month - covered
    for currency, to_date, last_week_usage in rows:
        daily = float(last_week_usage or 0.0) / 7.0
        out.append(
            MonthToDate(
                currency=currency,
                month=first.strftime("%B %Y"),
                to_date=float(to_date or 0.0),
                forecast=float(to_date or 0.0) + daily * remaining,
                days_covered=covered,
                days_in_month=days_in_month,
            )
        )
    return out


def _incident_views(alerting: list[Incident], recent: list[Incident], window_start: datetime) -> list[IncidentView]:
    seen: set[int] = set()
    views: list[IncidentView] = []
    for incident in [*alerting, *recent]:
        if incident.id in seen:
            continue
        seen.add(incident.id)
        is_new = incident.first_seen >= window_start or (
            incident.created_at is not None and incident.created_at >= window_start
        )
        views.append(IncidentView(incident, is_new, culprits(incident), chart_cid=f"incident-{incident.id}@spendwatch"))
    views.sort(key=lambda v: (not v.incident.is_alerting, -v.severity_rank, -abs(v.incident.impact)))
    return _group_by_cause(views)


def _group_by_cause(views: list[IncidentView]) -> list[IncidentView]:
    """One runaway query shows up in the provider total, its account/service and its owner, daily and
    hourly: list it once (the first, most severe view) and name the other incidents under it."""
    primary: dict[tuple[str, str], int] = {}
    grouped: list[IncidentView] = []
    for view in views:
        job = view.incident.top_job()
        key = (job.platform, job.job_id) if job is not None and view.incident.kind != "drop" else None
        if key is not None and key in primary:
            index = primary[key]
            first = grouped[index]
            grouped[index] = replace(first, related=(*first.related, view.incident))
            continue
        if key is not None:
            primary[key] = len(grouped)
        grouped.append(view)
    return grouped


def culprits(incident: Incident) -> tuple[Culprit, ...]:
    """Who and what: the jobs (with their user and query), then the top contributors by $."""
    found: list[Culprit] = []
    currency = incident.billing_currency
    for job in incident.jobs[:3]:
        what = {"bigquery": "query", "athena": "query"}.get(job.platform, f"{job.platform} job")
        where = f" in {job.sub_account_id}" if job.sub_account_id else ""
        detail = f"{what}{where}, by {job.user or 'an unknown principal'}"
        query = job.query_text[:400] + ("…" if len(job.query_text) > 400 else "") if job.query_text else None
        found.append(Culprit("job", job.name or job.job_id, detail, job.cost, query))
    for contributor in incident.contributors[:3]:
        label = contributor.dimension.replace("_", " ").replace("sub account id", "account")
        detail = f"{contributor.share:.0%} of the excess ({format_money(contributor.delta, currency, signed=True)})"
        found.append(Culprit(label, untagged(contributor.value), detail, contributor.delta))
    return tuple(found)


def _actions(store: Store, window_start: datetime) -> list[ActionView]:
    """Every action awaiting approval, and those that finished, failed or were undone in the window."""
    from spendwatch.killswitch.journal import ActionRecord, list_actions

    def view(record: ActionRecord) -> ActionView:
        target = record.target
        return ActionView(
            id=record.id, verb=record.verb, state=record.state, mode=record.mode, target=target.describe(),
            owner=target.owner, account=target.account, reason=record.reason, saving_per_hour=record.saving_per_hour,
            at_stake=record.at_stake, when=record.finished_at or record.decided_at or record.started_at
            or record.planned_at, error=record.error, currency=target.currency, outcome=record.outcome,
        )  # fmt: skip

    waiting = list_actions(store, states=["awaiting-approval"], limit=50)
    recent = list_actions(store, states=ACTION_WINDOW_STATES, since=window_start, limit=50)
    return [view(r) for r in [*waiting, *recent]]


def _charges(store: Store, start: datetime, end: datetime, column: str) -> list[ChargeRow]:
    rows = store.query(
        f"SELECT provider, charge_category, service_name, sub_account_id, billing_currency, sum({column}) AS amount "
        "FROM cost_lines WHERE charge_category <> 'Usage' AND charge_period_start >= ? AND charge_period_start < ? "
        "GROUP BY ALL HAVING abs(amount) >= 0.005 ORDER BY abs(amount) DESC LIMIT 20",
        [start, end],
    )
    return [ChargeRow(r[0], r[1], r[2], r[3], r[4], float(r[5])) for r in rows]


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
        "day": digest.day.isoformat(),
        "report_day": digest.report_day.isoformat(),
        "incidents": len(digest.incidents) + digest.more_incidents,
        "alerting": len(digest.alerting),
        "awaiting_approval": len(digest.awaiting_approval),
        "stale_sources": [f.source for f in digest.stale_sources],
        "headline": digest.headline,
    }


def dumps(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True)
