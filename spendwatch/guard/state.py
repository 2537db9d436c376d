"""What the watch loop remembers between polls (in memory, per store): buckets, caches, last sightings.

Nothing here is needed for correctness after a restart — a fresh state makes the first poll a full
scan — so it lives in the daemon process, not in the store. ``state_for(store, guard)`` returns the
one state of a process for a store, so polls scheduled by the daemon share their rate limits.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from spendwatch.guard.clients import DescribeCache
from spendwatch.guard.config import GuardConfig
from spendwatch.guard.estimate import Estimate, Observation
from spendwatch.guard.ratelimit import RateLimiter

_MAX_SEEN = 20_000


@dataclass
class AthenaMemory:
    """Query ids of one workgroup already seen (and whether they finished), and the ones still running."""

    seen: OrderedDict[str, bool] = field(default_factory=OrderedDict)
    running: set[str] = field(default_factory=set)
    initialised: bool = False

    def remember(self, query_id: str, finished: bool) -> None:
        self.seen[query_id] = finished
        self.seen.move_to_end(query_id)
        while len(self.seen) > _MAX_SEEN:
            self.seen.popitem(last=False)
        if finished:
            self.running.discard(query_id)
        else:
            self.running.add(query_id)


@dataclass
class Listing:
    """What one poll of one source found: running job records and which listings succeeded."""

    records: list[dict[str, Any]] = field(default_factory=list)
    ok_scopes: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)
    failed: set[str] = field(default_factory=set)  # platforms whose listing failed somewhere
    describes: int = 0


@dataclass
class WatchState:
    limiter: RateLimiter
    cache: DescribeCache
    athena: dict[tuple[str, str, str], AthenaMemory] = field(default_factory=dict)
    previous: dict[str, Observation] = field(default_factory=dict)
    last_polled: dict[tuple[str, str], datetime] = field(default_factory=dict)
    last_listing: dict[tuple[str, str], Listing] = field(default_factory=dict)
    estimates: dict[tuple[str, str], list[Estimate]] = field(default_factory=dict)
    batch_status: dict[str, dict[str, str]] = field(default_factory=dict)
    sessions: dict[str, tuple[datetime, Any]] = field(default_factory=dict)
    prices: dict[str, tuple[datetime, Any]] = field(default_factory=dict)
    k8s_clients: dict[tuple[str, str], Any] = field(default_factory=dict)  # (source, cluster) → ApiClient
    k8s_absent: dict[tuple[str, str], tuple[datetime, tuple[str, ...]]] = field(default_factory=dict)  # CRDs
    recorded: set[str] | None = None  # running jobs written to the store at the last poll (None: unknown)
    acted: dict[int, tuple[Any, ...]] = field(default_factory=dict)  # incident id → what the kill switch saw
    unsettled: bool = False  # the last poll had a failed listing: some recorded jobs are unconfirmed
    polls: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def new(cls, guard: GuardConfig, limiter: RateLimiter | None = None) -> WatchState:
        return cls(limiter or RateLimiter(overrides=dict(guard.rate_limits)), DescribeCache(guard.describe_ttl))

    def due(self, source: str, platform: str, now: datetime, guard: GuardConfig) -> bool:
        last = self.last_polled.get((source, platform))
        # A poll that lands a moment early (scheduler jitter) still counts as on time.
        return last is None or now - last >= guard.interval(platform) * 0.9


_STATES: dict[str, WatchState] = {}
_STATES_LOCK = threading.Lock()


def state_for(key: str, guard: GuardConfig) -> WatchState:
    """The process-wide state for one store (created on first use; a changed rate config starts afresh)."""
    with _STATES_LOCK:
        state = _STATES.get(key)
        if state is None or dict(state.limiter.overrides) != dict(guard.rate_limits):
            state = WatchState.new(guard)
            _STATES[key] = state
        return state
