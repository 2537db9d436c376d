"""The fast loop's one poll: list what runs now on every watched platform, price it, remember it.

Cheap calls only: each platform's running-only list calls (``aws_watch``, ``gcp_watch``,
``k8s_watch``: a few cluster-wide lists per cluster), the few
describes the listers need (cached between polls) and, for BigQuery, ``jobs.get`` only for jobs near a
cap whose list entry shows no progress. A platform with its own ``every`` is polled only when due;
in between, its jobs from the last poll stand in (run time brought forward). Every request goes
through the state's token buckets, so hundreds of running jobs never push the guard past a quota.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from spendwatch.collectors.aws.jobs import AwsJobsConfig
from spendwatch.collectors.gcp.jobs import GcpJobsConfig
from spendwatch.collectors.k8s.jobs import KubernetesJobsConfig
from spendwatch.errors import ConfigError
from spendwatch.guard.config import AWS_PLATFORMS, GuardConfig
from spendwatch.guard.estimate import Estimate, Observation, estimate, shifted
from spendwatch.guard.state import Listing, WatchState
from spendwatch.store import Store

log = logging.getLogger("spendwatch.guard")
JobSource = AwsJobsConfig | GcpJobsConfig | KubernetesJobsConfig
WATCHED = (AwsJobsConfig, GcpJobsConfig, KubernetesJobsConfig)
MAX_PARALLEL = 8


@dataclass
class Poll:
    """What one poll saw."""

    at: datetime
    estimates: list[Estimate] = field(default_factory=list)
    ok_scopes: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)
    polled: list[str] = field(default_factory=list)  # "source/platform" listed fresh this poll
    reused: list[str] = field(default_factory=list)  # not due: last poll's jobs stand in
    describes: int = 0
    api_calls: dict[str, int] = field(default_factory=dict)


def watched_sources(config: Any, guard: GuardConfig) -> list[JobSource]:
    """The ``aws-jobs`` / ``gcp-jobs`` / ``kubernetes-jobs`` sources the guard watches (``guard.sources``, else
    every enabled one)."""
    jobs = [s for s in config.sources if isinstance(s, WATCHED)]
    if not guard.sources:
        return [s for s in jobs if s.enabled]
    by_name = {s.name: s for s in config.sources}
    out: list[JobSource] = []
    for name in guard.sources:
        source = by_name.get(name)
        if source is None:
            known = ", ".join(s.name for s in jobs) or "none"
            raise ConfigError(f"guard.sources: no source named {name!r} (job sources: {known})")
        if not isinstance(source, WATCHED):
            raise ConfigError(
                f"guard.sources: {name!r} is a {source.type} source; the guard watches aws-jobs, gcp-jobs "
                "and kubernetes-jobs"
            )
        out.append(source)
    return out


def platforms_of(source: JobSource, guard: GuardConfig) -> list[str]:
    if isinstance(source, AwsJobsConfig):
        names = [p for p in AWS_PLATFORMS if getattr(source, p)]
    elif isinstance(source, KubernetesJobsConfig):
        names = ["kubernetes"]
    else:
        names = [
            p
            for p, s in (("bigquery", source.bigquery), ("vertex", source.vertex), ("dataproc", source.dataproc))
            if s.enabled
        ]
    return [p for p in names if guard.platform_enabled(p)]


def poll(
    guard: GuardConfig,
    sources: list[JobSource],
    state: WatchState,
    *,
    clients: dict[str, Any],
    now: datetime,
    store: Store | None,
) -> Poll:
    """List, price and remember every watched platform that is due; reuse the others' last sighting."""
    before = state.limiter.snapshot()
    result = Poll(at=now)
    tasks: list[tuple[JobSource, str]] = []
    for source in sources:
        for platform in platforms_of(source, guard):
            if state.due(source.name, platform, now, guard):
                tasks.append((source, platform))
            else:
                _reuse(state, source.name, platform, now, result)
    # Platforms are listed side by side: a slow first description of one (hundreds of new jobs
    # paced by its token bucket) must not delay another platform's runaway.
    with ThreadPoolExecutor(max_workers=max(1, min(MAX_PARALLEL, len(tasks))), thread_name_prefix="guard") as pool:
        futures = [
            pool.submit(_list, source, guard, state, clients.get(source.name) or {}, now, store, [platform])
            for source, platform in tasks
        ]
        listings = [future.result() for future in futures]
    for (source, platform), listing in zip(tasks, listings, strict=True):
        result.problems += listing.problems
        result.describes += listing.describes
        part = _part(listing, platform)
        if platform in listing.failed and not part.ok_scopes:
            _reuse(state, source.name, platform, now, result)  # keep watching what we last saw
            continue
        fresh = [_estimate(state, source.name, record, now) for record in part.records]
        state.last_listing[(source.name, platform)] = Listing(part.records, set(part.ok_scopes))
        state.last_polled[(source.name, platform)] = now
        state.estimates[(source.name, platform)] = fresh
        result.estimates += fresh
        result.ok_scopes |= part.ok_scopes
        result.polled.append(f"{source.name}/{platform}")
    after = state.limiter.snapshot()
    result.api_calls = {api: n - before.get(api, 0) for api, n in after.items() if n - before.get(api, 0)}
    state.polls += 1
    return result


def _list(
    source: JobSource,
    guard: GuardConfig,
    state: WatchState,
    clients: dict[str, Any],
    now: datetime,
    store: Store | None,
    due: list[str],
) -> Listing:
    from spendwatch.guard import aws_watch, gcp_watch, k8s_watch

    if isinstance(source, AwsJobsConfig):
        return aws_watch.watch_aws(source, guard, state, clients=clients, now=now, platforms=due)
    if isinstance(source, KubernetesJobsConfig):
        return k8s_watch.watch_kubernetes(source, guard, state, clients=clients, now=now, store=store)
    return gcp_watch.watch_gcp(source, guard, state, clients=clients, now=now, store=store, platforms=due)


def _part(listing: Listing, platform: str) -> Listing:
    records = [r for r in listing.records if r.get("platform") == platform]
    scopes = {s for s in listing.ok_scopes if s.split(":")[1] == platform}
    return Listing(records, scopes)


def _estimate(state: WatchState, source: str, record: dict[str, Any], now: datetime) -> Estimate:
    key = f"{record['platform']}:{record['job_id']}"
    item = estimate(source, record, now=now, previous=state.previous.get(key))
    if item.cost is not None:
        state.previous[key] = Observation(now, item.cost)
    return item


def _reuse(state: WatchState, source: str, platform: str, now: datetime, result: Poll) -> None:
    last = state.estimates.get((source, platform))
    listing = state.last_listing.get((source, platform))
    if last is None or listing is None:
        return
    result.estimates += [shifted(item, now) for item in last]
    result.ok_scopes |= listing.ok_scopes
    result.reused.append(f"{source}/{platform}")


def forget_ended(state: WatchState, running: set[str]) -> None:
    """Drop burn-rate memory of jobs no longer running (a long-lived daemon must not grow forever)."""
    for key in [k for k in state.previous if k not in running]:
        del state.previous[key]
