"""Attribution: who and what explains an incident's excess over expected.

Two answers, both ranked by dollars:

* **contributors** — the incident's excess split among the values of each child dimension
  (accounts, services, regions, owners, jobs, resources). A child's expected cost at a step is the
  median of the same step in the previous four cycles (weeks for daily series, days for hourly), so
  a child that did not exist before counts entirely as excess. Shares are of the positive deltas.
* **jobs** — job records (queries, training jobs, clusters …) that ran in the incident's window and
  match its dimensions (provider, account/project, owner, region, the platform behind the service),
  with the part of their estimated cost that fell inside the window. This is what lets the digest
  say "user X's query Y in project Z cost $N" even where the bill itself names nobody.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from spendwatch.detect.monitors import NONE_VALUE, MonitorConfig, dimension_value_sql, monitor_clauses
from spendwatch.store import Connection
from spendwatch.store.records import Contributor, JobLink

BASELINE_CYCLES = 4
MAX_CONTRIBUTORS_PER_DIMENSION = 5
MAX_JOBS = 5
MIN_SHARE = 0.01
# A child holding at least this share of the excess is one the incident is about.
SIGNIFICANT_SHARE = 0.05

# Which services' costs job records of a platform explain (matched case-insensitively by substring).
PLATFORM_SERVICES: dict[str, tuple[str, ...]] = {
    "bigquery": ("bigquery",),
    "athena": ("athena",),
    "sagemaker": ("sagemaker",),
    "emr": ("emr", "elastic mapreduce"),
    "glue": ("glue",),
    "batch": ("batch", "elastic compute cloud"),
    "vertex": ("vertex",),
    "dataproc": ("dataproc",),
    "redshift": ("redshift",),
    # Kubernetes workloads run on EKS nodes (EC2) and GKE nodes (Compute Engine / GKE Autopilot).
    "kubernetes": ("elastic compute cloud", "compute engine", "kubernetes engine", "elastic kubernetes service"),
}

# Job-record columns that correspond to a monitor dimension.
_JOB_FIELDS = {
    "provider": "provider",
    "sub_account_id": "sub_account_id",
    "region_id": "region_id",
    "job_id": "job_id",
    "resource_id": "resource_id",
}


@dataclass(frozen=True)
class Window:
    """The incident's steps: [first, last + step)."""

    first: datetime
    last: datetime
    step: timedelta

    @property
    def end(self) -> datetime:
        return self.last + self.step

    @property
    def cycle(self) -> timedelta:
        return timedelta(days=1) if self.step == timedelta(hours=1) else timedelta(days=7)


def series_filter(monitor: MonitorConfig, dimensions: dict[str, str], currency: str) -> tuple[list[str], list[Any]]:
    """SQL clauses selecting one series' cost lines (its dimension values, categories, filters)."""
    clauses = ["billing_currency = ?"]
    params: list[Any] = [currency]
    for dimension, value in dimensions.items():
        clauses.append(f"{dimension_value_sql(dimension)} = ?")
        params.append(value)
    scored, scored_params = monitor_clauses(monitor)
    return clauses + scored, params + scored_params


def contributors(
    con: Connection,
    monitor: MonitorConfig,
    dimensions: dict[str, str],
    currency: str,
    window: Window,
    *,
    cost_column: str,
) -> tuple[Contributor, ...]:
    found: list[Contributor] = []
    clauses, params = series_filter(monitor, dimensions, currency)
    history_start = window.first - BASELINE_CYCLES * window.cycle
    unit = "hour" if window.step == timedelta(hours=1) else "day"
    for child in monitor.attribute_by:
        if child in dimensions:
            continue
        rows = con.execute(
            f"SELECT {dimension_value_sql(child)} AS value, date_trunc('{unit}', charge_period_start) AS ts, "
            f"sum({cost_column}) FROM cost_lines WHERE {' AND '.join(clauses)} "
            "AND charge_period_start >= ? AND charge_period_start < ? GROUP BY ALL",
            [*params, history_start, window.end],
        ).fetchall()
        found.extend(_split(child, rows, window))
    # Grouped by dimension in the monitor's attribute_by order, each ranked by dollars.
    order = {dimension: i for i, dimension in enumerate(monitor.attribute_by)}
    return tuple(sorted(found, key=lambda c: (order[c.dimension], -c.delta, c.value)))


def _split(dimension: str, rows: Sequence[tuple[Any, ...]], window: Window) -> list[Contributor]:
    by_value: dict[str, dict[datetime, float]] = {}
    for value, ts, cost in rows:
        by_value.setdefault(str(value), {})[ts] = float(cost or 0.0)
    steps = _steps(window)
    deltas: list[tuple[str, float, float, float]] = []
    for value, costs in by_value.items():
        actual = sum(costs.get(t, 0.0) for t in steps)
        expected = sum(
            float(np.median([costs.get(t - k * window.cycle, 0.0) for k in range(1, BASELINE_CYCLES + 1)]))
            for t in steps
        )
        deltas.append((value, actual - expected, actual, expected))
    positive = sum(d for _, d, _, _ in deltas if d > 0)
    if positive <= 0:
        return []
    ranked = sorted(deltas, key=lambda item: -item[1])[:MAX_CONTRIBUTORS_PER_DIMENSION]
    return [
        Contributor(dimension, value, round(delta, 2), round(delta / positive, 4), round(actual, 2), round(expected, 2))
        for value, delta, actual, expected in ranked
        if delta > 0 and delta / positive >= MIN_SHARE
    ]


def _steps(window: Window) -> list[datetime]:
    steps, t = [], window.first
    while t <= window.last:
        steps.append(t)
        t += window.step
    return steps


# -- jobs ------------------------------------------------------------------------------------------


def link_jobs(
    con: Connection,
    dimensions: dict[str, str],
    window: Window,
    impact: float,
    found: Sequence[Contributor] = (),
    *,
    now: datetime,
) -> tuple[JobLink, ...]:
    """Job records that ran in the window and match the incident's dimensions, by cost in the window.

    Every link stays inside the incident's scope — the time window and the series' own provider,
    account/project, region and owner — whatever the bill's tags say. A job the contributors name
    (``job_id``/``resource_id`` values, which come from tags anyone can write) may bypass only the
    service narrowing, and only if the series' own cost lines carrying that id were billed in the
    job's provider and account: a tag naming another account's job links nothing.
    """
    scope, params = _scope(dimensions, window, now)
    clauses, narrowing_params = _matching(dimensions, found)
    if clauses is None:
        return ()
    where = " AND ".join(scope) + " AND (" + (" AND ".join(clauses) or "TRUE")
    params += narrowing_params
    named = [c.value for c in found if c.dimension in ("job_id", "resource_id")]
    if named:
        where += " OR " + _named_clause(dimensions, named)
        params += _named_params(dimensions, window, named)
    where += ")"
    rows = con.execute(
        'SELECT platform, job_id, provider, sub_account_id, "user", name, state, estimated_cost, cost_method, '
        "start_time, end_time, query_text, resource_id, region_id, labels FROM jobs j WHERE "
        + where
        + " ORDER BY estimated_cost DESC NULLS LAST LIMIT 500",
        params,
    ).fetchall()
    links = [_link(row, window, now) for row in rows]
    floor = max(impact, 0.0) * 0.01
    links = [link for link in links if link.cost > 0 and link.cost >= floor]
    return tuple(sorted(links, key=lambda link: -link.cost)[:MAX_JOBS])


def _scope(dimensions: dict[str, str], window: Window, now: datetime) -> tuple[list[str], list[Any]]:
    """Clauses every linked job must satisfy: it ran in the window, in the series' provider/account/owner."""
    clauses = ["coalesce(j.start_time, j.first_seen) < ?", "coalesce(j.end_time, ?) > ?"]
    params: list[Any] = [window.end, now, window.first]
    for dimension, value in dimensions.items():
        if value == NONE_VALUE:
            continue  # untagged spend can be anyone's: do not narrow the jobs by it
        if dimension in _JOB_FIELDS:
            clauses.append(f"j.{_JOB_FIELDS[dimension]} = ?")
            params.append(value)
        elif dimension == "owner":
            clauses.append('(j.owner = ? OR j."user" = ?)')
            params.extend([value, value])
    return clauses, params


def _matching(dimensions: dict[str, str], found: Sequence[Contributor]) -> tuple[list[str] | None, list[Any]]:
    """The service and contributor narrowing a job found by its dimensions must pass (``None``: none can)."""
    clauses: list[str] = []
    params: list[Any] = []
    service = dimensions.get("service_name")
    if service is not None and service != NONE_VALUE:
        platforms = platforms_for_service(service)
        if not platforms:
            return None, []
        clauses.append(f"j.platform IN ({', '.join('?' * len(platforms))})")
        params.extend(platforms)
    for _dimension, column, allowed in _narrowing(dimensions, found):
        if not allowed:
            return None, []
        clauses.append(f"j.{column} IN ({', '.join('?' * len(allowed))})")
        params.extend(allowed)
    return clauses, params


def _named_clause(dimensions: dict[str, str], named: Sequence[str]) -> str:
    """A job a contributor names, if the series' cost lines naming it were billed in the job's account."""
    marks = ", ".join("?" * len(named))
    series = "".join(f" AND {dimension_value_sql(d)} = ?" for d in dimensions)
    return (
        f"((j.job_id IN ({marks}) OR j.resource_id IN ({marks})) AND EXISTS (SELECT 1 FROM cost_lines c "
        "WHERE c.provider = j.provider AND c.sub_account_id IS NOT DISTINCT FROM j.sub_account_id "
        "AND (c.job_id = j.job_id OR c.resource_id = j.job_id OR c.resource_id = j.resource_id) "
        f"AND (c.job_id IN ({marks}) OR c.resource_id IN ({marks})) "
        f"AND c.charge_period_start >= ? AND c.charge_period_start < ?{series}))"
    )


def _named_params(dimensions: dict[str, str], window: Window, named: Sequence[str]) -> list[Any]:
    return [*named, *named, *named, *named, window.first, window.end, *dimensions.values()]


def _narrowing(dimensions: dict[str, str], found: Sequence[Contributor]) -> list[tuple[str, str, list[str]]]:
    """Jobs must belong to a service and an account that carried the excess.

    When the incident's series does not name the service (or account) itself, its contributors say
    which ones grew: a job on a platform whose service did not grow cannot explain the excess, however
    much it cost (e.g. a tagged training job is no culprit of the *untagged* spend's spike).
    """
    narrowing = []
    for dimension, column in (("service_name", "platform"), ("sub_account_id", "sub_account_id")):
        if dimension in dimensions:
            continue
        grew = [c.value for c in found if c.dimension == dimension and c.share >= SIGNIFICANT_SHARE]
        if not any(c.dimension == dimension for c in found):
            continue  # nothing known about this dimension: do not narrow
        if dimension == "service_name":
            grew = sorted({p for service in grew for p in platforms_for_service(service)})
        narrowing.append((dimension, column, grew))
    return narrowing


def platforms_for_service(service: str) -> list[str]:
    name = service.lower()
    return sorted(p for p, needles in PLATFORM_SERVICES.items() if any(n in name for n in needles))


def _link(row: Sequence[Any], window: Window, now: datetime) -> JobLink:
    (platform, job_id, provider, account, user, name, state, cost, method, start, end, query, resource, region,
     labels) = row  # fmt: skip
    cost = float(cost or 0.0)
    if start is not None:
        # Only the part of the job's cost that fell inside the incident's window explains it.
        stop = end or now
        total = (stop - start).total_seconds()
        inside = (min(stop, window.end) - max(start, window.first)).total_seconds()
        if total > 0:
            cost *= max(0.0, min(1.0, inside / total))
    return JobLink(
        platform=platform, job_id=job_id, provider=provider, sub_account_id=account, user=user, name=name,
        state=state, cost=round(cost, 2), cost_method=method, start_time=start, end_time=end,
        query_text=(query[:500] if query else None), resource_id=resource, region_id=region,
        labels=dict(labels or {}),
    )  # fmt: skip
