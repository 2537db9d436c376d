"""Running Kubernetes workloads for the guard: every cluster of a ``kubernetes-jobs`` source, each poll.

One poll of a cluster is a handful of cluster-wide lists (nodes, live pods, and the owners of the
tracked kinds — Jobs, RayJobs, RayClusters, PyTorchJobs, TFJobs …), each paged and each taking a
token from the ``kubernetes:list`` bucket of that cluster, priced by ``collectors.k8s.workloads``.
What the guard keeps between polls: one ``ApiClient`` per cluster (its connection pool), the kinds
whose CRD a cluster does not have (asked again after ``describe_ttl``) and the price table (the
GKE Catalog prices cached in the store, read once per ``describe_ttl``). A cluster that cannot be
read is a problem for that cluster only: its workloads from the last poll stand in and its guard
incidents stay open (its scope ``k8s:kubernetes:<cluster>`` is not confirmed).
"""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Any

from spendwatch.collectors.k8s.jobs import KubernetesJobsConfig, cluster_client, gcp_prices, list_running, pricer
from spendwatch.errors import SourceError
from spendwatch.guard.config import GuardConfig
from spendwatch.guard.estimate import k8s_scope, labels_of
from spendwatch.guard.gcp_watch import merged_prices
from spendwatch.guard.state import Listing, WatchState
from spendwatch.store import Store

API = "kubernetes:list"


def watch_kubernetes(
    source: KubernetesJobsConfig,
    guard: GuardConfig,
    state: WatchState,
    *,
    clients: dict[str, Any],
    now: datetime,
    store: Store | None,
) -> Listing:
    """The tracked workloads running now in every cluster of ``source``."""
    listing = Listing()
    table = _gcp_table(source, guard, state, store, now)
    for cluster in source.clusters:
        scope = f"{source.name}/{cluster}"
        try:
            api = _client(source, cluster, clients, state)
            pricing = pricer(source, cluster, aws_overrides=guard.aws_prices, gcp=table)
            records, absent, _ = list_running(
                source,
                cluster,
                api,
                now=now,
                pricing=pricing,
                take=partial(state.limiter.take, API, scope),
                skip=_known_absent(state, source.name, cluster, now, guard),
            )
        except SourceError as exc:
            listing.problems.append(f"{source.name} {cluster}: {exc}")
            listing.failed.add("kubernetes")
            continue
        _remember_absent(state, source.name, cluster, absent, now)
        for record in records:
            record["labels"] = labels_of(record.get("labels"))
        listing.records.extend(records)
        listing.ok_scopes.add(k8s_scope(cluster))
    return listing


def _client(source: KubernetesJobsConfig, cluster: str, clients: dict[str, Any], state: WatchState) -> Any:
    """The cluster's ``ApiClient``: injected, or built once and kept (a new pool per poll wastes TLS handshakes)."""
    if f"k8s:{cluster}" in clients or "k8s" in clients:
        return cluster_client(source, cluster, clients)
    key = (source.name, cluster)
    if key not in state.k8s_clients:
        state.k8s_clients[key] = cluster_client(source, cluster, clients)
    return state.k8s_clients[key]


def _known_absent(state: WatchState, source: str, cluster: str, now: datetime, guard: GuardConfig) -> tuple[str, ...]:
    """Kinds the cluster had no CRD for at a recent poll (a CRD installed since is seen after ``describe_ttl``)."""
    found = state.k8s_absent.get((source, cluster))
    if found is None or now - found[0] >= guard.describe_ttl:
        return ()
    return found[1]


def _remember_absent(state: WatchState, source: str, cluster: str, absent: list[str], now: datetime) -> None:
    previous = state.k8s_absent.get((source, cluster))
    if previous is not None and tuple(absent) == previous[1]:
        return  # keep the time they were first found absent: the ttl runs from the real check
    state.k8s_absent[(source, cluster)] = (now, tuple(absent))


def _gcp_table(
    source: KubernetesJobsConfig, guard: GuardConfig, state: WatchState, store: Store | None, now: datetime
) -> Any:
    key = f"k8s:{source.name}"
    cached = state.prices.get(key)
    if cached is not None and now - cached[0] < guard.describe_ttl:
        return cached[1]
    table = gcp_prices(source, merged_prices(source.gcp_prices, guard.gcp_prices), store)
    state.prices[key] = (now, table)
    return table
