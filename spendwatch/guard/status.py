"""``spendwatch guard status``: burn rates now — per running job, per user today, per project — against the caps.

By default it reads what the daemon's guard recorded at its last poll (no API call: it works beside a
running daemon); ``--live`` polls the clouds now, without recording anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from spendwatch.clock import Clock
from spendwatch.guard.config import GuardConfig
from spendwatch.guard.engine import SOURCE_PREFIX, _day_start, day_rows
from spendwatch.guard.estimate import Estimate, estimate, labels_of
from spendwatch.guard.state import WatchState
from spendwatch.guard.watch import poll, watched_sources
from spendwatch.store import Store
from spendwatch.store.records import Incident
from spendwatch.store.schema import JOB_SCHEMA, JOB_STATES_RUNNING


def money(value: float | None, currency: str = "USD") -> str:
    return "-" if value is None else f"{value:,.2f} {currency}"


def span(delta: timedelta | None) -> str:
    if delta is None:
        return "-"
    minutes = int(delta.total_seconds() // 60)
    return f"{minutes // 60}h{minutes % 60:02d}m"


@dataclass(frozen=True)
class Total:
    subject: str  # a user, or "provider account"
    currency: str
    value: float
    cap: float | None
    jobs: int


@dataclass
class StatusView:
    at: datetime
    origin: str
    jobs: list[Estimate] = field(default_factory=list)
    caps: dict[str, float | None] = field(default_factory=dict)  # job key → its job_cost cap
    users: list[Total] = field(default_factory=list)
    projects: list[Total] = field(default_factory=list)
    incidents: list[Incident] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def ranked(self, top: int) -> list[Estimate]:
        return sorted(self.jobs, key=lambda e: -(e.burn_rate or 0.0))[:top]

    def lines(self, top: int) -> list[str]:
        out = [f"guard status at {self.at:%Y-%m-%d %H:%M:%S} UTC ({self.origin}): {len(self.jobs)} running job(s)"]
        if self.jobs:
            out.append(
                f"  {'burn/h':>12} {'so far':>14} {'projected':>14} {'cap':>10} {'runtime':>8}  job (user, account)"
            )
        for item in self.ranked(top):
            cap = self.caps.get(item.key)
            out.append(
                f"  {money(item.burn_rate, item.currency):>12} {money(item.cost, item.currency):>14} "
                f"{money(item.projected, item.currency):>14} {'-' if cap is None else f'{cap:,.0f}':>10} "
                f"{span(item.runtime):>8}  {item.platform} {item.record['job_id']} "
                f"({item.user or 'unknown'}, {item.account or '-'})"
            )
        for title, totals, unit in (("users today", self.users, ""), ("projects burning now", self.projects, "/h")):
            if totals:
                out.append(f"{title}:")
            for total in totals[:top]:
                limit = "no cap" if total.cap is None else f"cap {total.cap:,.2f}{unit}"
                flag = "  OVER" if total.cap is not None and total.value > total.cap else ""
                out.append(
                    f"  {total.subject}: {total.value:,.2f} {total.currency}{unit} ({limit}; {total.jobs} job(s)){flag}"
                )
        if self.incidents:
            out.append("open guard incidents:")
        for incident in self.incidents:
            out.append(f"  #{incident.id} {incident.severity} {incident.monitor}: {incident.culprit_sentence()}")
        return out

    def as_json(self, top: int) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "origin": self.origin,
            "jobs": [
                {
                    "platform": e.platform,
                    "job_id": e.record["job_id"],
                    "user": e.user,
                    "account": e.account,
                    "runtime_seconds": e.runtime.total_seconds() if e.runtime else None,
                    "cost": e.cost,
                    "projected": e.projected,
                    "burn_rate_per_hour": e.burn_rate,
                    "currency": e.currency,
                    "cap": self.caps.get(e.key),
                    "cost_method": e.method,
                }
                for e in self.ranked(top)
            ],
            "users": [t.__dict__ for t in self.users],
            "projects": [t.__dict__ for t in self.projects],
            "incidents": [
                {"id": i.id, "severity": i.severity, "monitor": i.monitor, "culprit": i.culprit_sentence()}
                for i in self.incidents
            ],
            "problems": self.problems,
        }


def guard_status(config: Any, store: Store, clock: Clock, *, live: bool = False) -> StatusView:
    from spendwatch.detect.incidents import load_incidents

    guard: GuardConfig = config.guard
    now = clock.now()
    if live:
        result = poll(guard, watched_sources(config, guard), WatchState.new(guard), clients={}, now=now, store=store)
        view = StatusView(now, "polled now", result.estimates, problems=list(result.problems))
    else:
        view = StatusView(now, f"the guard's last poll, within {span(guard.every * 3)}", _recorded(store, guard, now))
    view.caps = {e.key: guard.job_limit(e.record, "job_cost")[1] for e in view.jobs}
    view.users = _users(guard, store, view.jobs, now)
    view.projects = _projects(guard, view.jobs)
    view.incidents = load_incidents(store, kinds=["guard"], statuses=["open", "ongoing"])
    return view


def _recorded(store: Store, guard: GuardConfig, now: datetime) -> list[Estimate]:
    """The running jobs the guard recorded at its last poll (rows not seen for 3 intervals are stale)."""
    states = sorted(JOB_STATES_RUNNING)
    names = JOB_SCHEMA.names
    rows = store.query(
        f"""SELECT source, {", ".join(f'"{n}"' for n in names)} FROM jobs
        WHERE source LIKE '{SOURCE_PREFIX}%' AND upper(state) IN ({", ".join("?" * len(states))})
          AND last_seen >= ?""",
        [*states, now - guard.every * 3],
    )
    out = []
    for row in rows:
        record = dict(zip(names, row[1:], strict=True))
        record["labels"] = labels_of(record.get("labels"))
        out.append(estimate(str(row[0]).removeprefix(SOURCE_PREFIX), record, now=now, previous=None))
    return out


def _first_cap(guard: GuardConfig, limit: str, record: Mapping[str, Any]) -> float | None:
    return next((cap for _, match, cap, _ in guard.aggregate_scopes(limit) if match.matches(record)), None)


def _users(guard: GuardConfig, store: Store, jobs: list[Estimate], now: datetime) -> list[Total]:
    rows = day_rows(store, jobs, _day_start(now, guard.day_timezone), now)
    totals: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        who = row.get("user") or row.get("owner")
        if who:
            totals.setdefault((str(who), str(row["billing_currency"])), []).append(row)
    out = [
        Total(
            user,
            currency,
            sum(float(r.get("estimated_cost") or 0) for r in group),
            _first_cap(guard, "user_daily_cost", group[0]),
            len(group),
        )
        for (user, currency), group in totals.items()
    ]
    return sorted(out, key=lambda t: -t.value)


def _projects(guard: GuardConfig, jobs: list[Estimate]) -> list[Total]:
    groups: dict[tuple[str, str, str], list[Estimate]] = {}
    for item in jobs:
        if item.account and item.burn_rate is not None:
            groups.setdefault((str(item.record["provider"]), item.account, item.currency), []).append(item)
    out = [
        Total(
            f"{provider} {account}",
            currency,
            sum(i.burn_rate or 0 for i in group),
            _first_cap(guard, "project_burn_rate", group[0].record),
            len(group),
        )
        for (provider, account, currency), group in groups.items()
    ]
    return sorted(out, key=lambda t: -t.value)
