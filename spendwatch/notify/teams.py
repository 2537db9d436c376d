"""Which team a cost line, a person, an incident or an action belongs to.

A cost line's team is, in order:

1. the first ``notify.routes`` entry whose ``owners`` / ``accounts`` / ``tags`` globs match the line;
2. else the value of the line's team tag (``notify.team_tag``, default ``team``);
3. else ``untagged``.

A route named like a team-tag value (``name: ml-research``) needs no matchers: the tag routes to it.
People, accounts and so incidents get the team their cost lines carry most; an incident belongs to
every team its owners and accounts point at (the FinOps digest has them all). Route patterns and tag
values are data, so they only ever reach SQL as parameters.
"""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from spendwatch.store import Store

if TYPE_CHECKING:
    from spendwatch.notify.config import NotifyConfig, RouteConfig
    from spendwatch.store.records import Incident

UNTAGGED = "untagged"
# An account belongs to a team when that team carries at least this share of its spend.
ACCOUNT_MAJORITY = 0.5


def _glob_sql(column: str, patterns: Iterable[str]) -> tuple[list[str], list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for pattern in patterns:
        clauses.append(f"lower(coalesce({column}, '')) GLOB ?")
        params.append(pattern.lower())
    return clauses, params


def route_sql(route: RouteConfig) -> tuple[str, list[Any]]:
    """A SQL condition on ``cost_lines`` that is true for the lines this route claims (``FALSE`` if none)."""
    clauses, params = _glob_sql("owner", route.owners)
    more, more_params = _glob_sql("sub_account_id", route.accounts)
    clauses += more
    params += more_params
    for key, patterns in route.tags.items():
        for pattern in patterns:
            clauses.append("lower(coalesce(tags[?], '')) GLOB ?")
            params += [key, pattern.lower()]
    return ("(" + " OR ".join(clauses) + ")") if clauses else "FALSE", params


def team_sql(notify: NotifyConfig) -> tuple[str, list[Any]]:
    """A SQL expression naming each cost line's team (see the module docstring)."""
    whens: list[str] = []
    params: list[Any] = []
    for route in notify.routes:
        condition, condition_params = route_sql(route)
        if condition == "FALSE":
            continue
        whens.append(f"WHEN {condition} THEN ?")
        params += [*condition_params, route.name]
    if notify.team_tag:
        fallback = "coalesce(nullif(trim(tags[?]), ''), ?)"
        params += [notify.team_tag, UNTAGGED]
    else:
        fallback = "?"
        params.append(UNTAGGED)
    return (f"(CASE {' '.join(whens)} ELSE {fallback} END)" if whens else fallback), params


@dataclass(frozen=True)
class TeamMap:
    """Whose team is whose, read from the cost lines (and the routes' owner / account globs)."""

    owners: dict[str, str]
    accounts: dict[str, str]
    routes: tuple[RouteConfig, ...]

    def of_owner(self, owner: str | None) -> str | None:
        if not owner:
            return None
        for route in self.routes:
            if route.matches([owner], []):
                return route.name
        return self.owners.get(owner.lower())

    def of_account(self, account: str | None) -> str | None:
        if not account:
            return None
        for route in self.routes:
            if route.matches([], [account]):
                return route.name
        return self.accounts.get(account)

    def of_parties(self, owners: Iterable[str | None], accounts: Iterable[str | None]) -> tuple[str, ...]:
        """Every team these owners point at; their accounts' teams only when no owner has one."""
        teams = [t for t in (self.of_owner(o) for o in owners) if t]
        if not teams:
            teams = [t for t in (self.of_account(a) for a in accounts) if t]
        return tuple(dict.fromkeys(teams)) or (UNTAGGED,)

    def of_incident(self, incident: Incident) -> tuple[str, ...]:
        return self.of_parties(*incident_parties(incident))


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


def team_map(notify: NotifyConfig, store: Store, *, since: Any, column: str = "effective_cost") -> TeamMap:
    """Owner → team and account → team from the cost lines since ``since`` (by dollars)."""
    expression, params = team_sql(notify)
    rows = store.query(
        f"SELECT lower(owner), sub_account_id, {expression} AS team, sum(abs({column})) FROM cost_lines "
        "WHERE charge_period_start >= ? GROUP BY ALL",
        [*params, since],
    )
    by_owner: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    by_account: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for owner, account, team, cost in rows:
        if owner:
            by_owner[owner][team] += float(cost or 0.0)
        if account:
            by_account[account][team] += float(cost or 0.0)
    owners = {o: _top(teams) for o, teams in by_owner.items() if _top(teams) != UNTAGGED}
    accounts = {}
    for account, teams in by_account.items():
        top = _top(teams)
        if top != UNTAGGED and teams[top] >= ACCOUNT_MAJORITY * sum(teams.values()):
            accounts[account] = top
    return TeamMap(owners, accounts, tuple(notify.routes))


def _top(teams: dict[str, float]) -> str:
    return max(teams.items(), key=lambda item: (item[1], item[0]))[0]


def glob_match(value: str | None, patterns: Iterable[str]) -> bool:
    return bool(value) and any(fnmatch.fnmatchcase(str(value).lower(), p.lower()) for p in patterns)
