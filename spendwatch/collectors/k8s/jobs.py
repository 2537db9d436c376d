"""``kubernetes-jobs``: the training jobs, Ray clusters and GPU pods running in your clusters, with cost.

Each run reads every configured cluster (``inventory``: nodes, live pods, the owners of the
tracked kinds) and records each tracked workload with a live pod as a job of platform
``kubernetes`` (``k8s_workloads``): ``k8s://<cluster>/<namespace>/<Kind>/<name>``, its owner from
its labels, its GPUs and nodes, its cost so far and burn rate from node prices shared by requests.
A workload this source recorded as running that a successful read no longer shows has ended: it is
recorded again with state ``ENDED`` (its last figures kept). The runaway-job guard watches the same
source minute by minute (``guard/k8s_watch.py``), through the same reader and pricing.

A cluster that cannot be read (credentials, RBAC, network) is a ``Problem`` for that cluster; the
others are recorded. Records carry the cluster's place (``provider``, ``account``, ``region`` from
its connection), so attribution links a workload to the EC2 or Compute Engine spend of its account,
and the kill switch acts on it only inside that account (``killswitch.kubernetes.clusters``).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field, field_validator, model_validator

from spendwatch.collectors.aws.prices import PriceTable as AwsPrices
from spendwatch.collectors.base import SOURCES, Batch, CollectWindow, JobBatch, Problem, Source, SourceConfig
from spendwatch.collectors.gcp.prices import BUNDLED, PriceOverrides
from spendwatch.collectors.gcp.prices import PriceTable as GcpPrices
from spendwatch.collectors.job_records import jobs_table
from spendwatch.collectors.k8s.costs import DEFAULT_OWNER_LABELS, KubernetesLabels
from spendwatch.collectors.k8s.inventory import Take, read_cluster
from spendwatch.collectors.k8s.workloads import (
    DEFAULT_GPU_RESOURCES,
    ClusterPlace,
    NodePricer,
    workload_records,
)
from spendwatch.config_types import Duration
from spendwatch.errors import ActionError, SourceError
from spendwatch.k8s_client import EXTRA_HINT, KubernetesConnection, api_client, kubernetes_installed
from spendwatch.store import Store
from spendwatch.store.records import labels_dict
from spendwatch.store.schema import JOB_SCHEMA, JOB_STATES_RUNNING

WorkloadKind = Literal["Job", "RayJob", "RayCluster", "PyTorchJob", "TFJob", "Pod", "Deployment", "StatefulSet"]
DEFAULT_KINDS: tuple[WorkloadKind, ...] = ("Job", "RayJob", "RayCluster", "PyTorchJob", "TFJob", "Pod")
# Cluster names end up in k8s:// ids and in the kill switch's config keys.
_CLUSTER_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,98}[A-Za-z0-9])?$")
_RESOURCE_NAME = re.compile(r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[a-z0-9]([-a-z0-9_.]{0,61}[a-z0-9])?$")


class KubernetesJobsConfig(SourceConfig):
    type: Literal["kubernetes-jobs"] = "kubernetes-jobs"
    every: Duration = Field(default=timedelta(minutes=5), description="workloads change fast: collect often")
    settle_lag: Duration = Field(default=timedelta(hours=1), description="(job records are not scored)")
    clusters: dict[str, KubernetesConnection] = Field(
        min_length=1,
        description="cluster name → connection and where it runs (provider, account, region)",
    )
    kinds: list[WorkloadKind] = Field(
        default_factory=lambda: list(DEFAULT_KINDS),
        description="workload kinds recorded (a pod counts as the top-most of these above it; Pod: bare pods)",
    )
    namespaces: list[str] = Field(default_factory=list, description="namespaces read (globs; default: all)")
    exclude_namespaces: list[str] = Field(
        default_factory=lambda: ["kube-system", "kube-public", "kube-node-lease"],
        description="namespaces never recorded (globs)",
    )
    owner_labels: list[str] = Field(
        default_factory=lambda: list(DEFAULT_OWNER_LABELS),
        description="workload/pod label keys naming the owner, first match wins",
    )
    gpu_resources: list[str] = Field(
        default_factory=lambda: list(DEFAULT_GPU_RESOURCES), description="extended resources counted as GPUs"
    )
    prices: dict[str, float] = Field(
        default_factory=dict,
        description="$/hour of a node by its instance/machine type (wins over the EC2 / Compute Engine tables)",
    )
    gcp_prices: PriceOverrides | None = Field(default=None, description="GKE nodes: machine family and GPU rates")
    spot_factor: float = Field(
        default=1.0, gt=0, le=1, description="spot/preemptible nodes cost on-demand × this (1.0: a guard errs high)"
    )
    page_size: int = Field(default=500, ge=10, le=5000, description="items per list call (limit/continue)")

    @field_validator("clusters")
    @classmethod
    def _clusters(cls, value: dict[str, KubernetesConnection]) -> dict[str, KubernetesConnection]:
        for name, connection in value.items():
            if not _CLUSTER_NAME.match(name):
                raise ValueError(f"{name!r} is not a cluster name (letters, digits, '-', '_', '.')")
            if not connection.reachable:
                raise ValueError(f"{name}: auth: none needs a server here (the source must read the cluster)")
        return value

    @field_validator("owner_labels")
    @classmethod
    def _owner_labels(cls, value: list[str]) -> list[str]:
        return KubernetesLabels(owner_labels=value).owner_labels

    @field_validator("gpu_resources")
    @classmethod
    def _gpu_resources(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _RESOURCE_NAME.match(name):
                raise ValueError(f"{name!r} is not a Kubernetes resource name (e.g. nvidia.com/gpu)")
        return value

    @field_validator("prices")
    @classmethod
    def _prices(cls, value: dict[str, float]) -> dict[str, float]:
        for name, price in value.items():
            if price < 0:
                raise ValueError(f"{name}: a price cannot be negative")
        return value

    @model_validator(mode="after")
    def _extra(self) -> KubernetesJobsConfig:
        if not kubernetes_installed():
            raise ValueError(f"clusters: {EXTRA_HINT}")
        return self

    def wanted(self, namespace: str) -> bool:
        if self.namespaces and not any(fnmatch.fnmatchcase(namespace, p) for p in self.namespaces):
            return False
        return not any(fnmatch.fnmatchcase(namespace, p) for p in self.exclude_namespaces)

    def place(self, cluster: str) -> ClusterPlace:
        provider, account, region = self.clusters[cluster].host(cluster)
        return ClusterPlace(cluster, provider, account, region)


def cluster_client(config: KubernetesJobsConfig, cluster: str, clients: Mapping[str, Any]) -> Any:
    """An injected ``k8s:<cluster>`` / ``k8s`` client, else one built from the cluster's connection."""
    for key in (f"k8s:{cluster}", "k8s"):
        if key in clients:
            return clients[key]
    try:
        return api_client(config.clusters[cluster])
    except ActionError as exc:
        raise SourceError(str(exc)) from None


def gcp_prices(config: KubernetesJobsConfig, overrides: PriceOverrides | None, store: Store | None) -> GcpPrices:
    """Bundled Compute Engine prices, then Catalog prices cached by gcp-billing-accounts, then the config's."""
    table = BUNDLED
    regions = [c.region for c in config.clusters.values() if c.provider == "gcp" and c.region]
    if store is not None and regions:
        from spendwatch.collectors.gcp.billing import cached_catalog_prices

        cached = cached_catalog_prices(store, regions[0])
        if cached is not None:
            table = table.merged(cached, source="bundled+catalog")
    return table.merged(overrides)


def pricer(
    config: KubernetesJobsConfig,
    cluster: str,
    *,
    aws_overrides: Mapping[str, float] | None = None,
    gcp: GcpPrices | None = None,
) -> NodePricer:
    place = config.place(cluster)
    return NodePricer(
        provider=place.provider,
        region=place.region,
        overrides=dict(config.prices),
        aws=AwsPrices(dict(aws_overrides or {})),
        gcp=gcp if gcp is not None else BUNDLED.merged(config.gcp_prices),
        spot_factor=config.spot_factor,
        gpu_resources=tuple(config.gpu_resources),
    )


def list_running(
    config: KubernetesJobsConfig,
    cluster: str,
    api: Any,
    *,
    now: datetime,
    pricing: NodePricer | None = None,
    take: Take | None = None,
    skip: tuple[str, ...] = (),
) -> tuple[list[dict[str, Any]], list[str], int]:
    """(records of the tracked workloads running in ``cluster`` now, kinds absent there, API calls made)."""
    inventory = read_cluster(
        api,
        cluster,
        tracked=config.kinds,
        page_size=config.page_size,
        timeout=config.clusters[cluster].timeout,
        take=take,
        skip=skip,
    )
    records = workload_records(
        inventory,
        config.place(cluster),
        pricing or pricer(config, cluster),
        now=now,
        tracked=config.kinds,
        owner_labels=config.owner_labels,
        namespaces=config.wanted,
    )
    return records, inventory.absent, inventory.calls


def records_table(records: list[dict[str, Any]]) -> pa.Table:
    return jobs_table([{k: v for k, v in r.items() if k in JOB_SCHEMA.names} for r in records])


@SOURCES.register("kubernetes-jobs")
class KubernetesJobsSource(Source):
    config_model: ClassVar[type[SourceConfig]] = KubernetesJobsConfig
    config: KubernetesJobsConfig

    def collect(self, window: CollectWindow) -> Iterator[Batch]:
        now = window.until
        store: Store | None = self.context.store
        table = gcp_prices(self.config, self.config.gcp_prices, store)
        for cluster in self.config.clusters:
            self.context.checkpoint()
            try:
                api = cluster_client(self.config, cluster, self.context.clients)
                pricing = pricer(self.config, cluster, gcp=table)
                records, absent, calls = list_running(
                    self.config, cluster, api, now=now, pricing=pricing, take=self.context.checkpoint
                )
            except SourceError as exc:
                yield Problem(f"{self.name} {cluster}", str(exc))
                continue
            self.context.count("kubernetes_list_calls", calls)
            self.context.count("kubernetes_workloads_running", len(records))
            if absent:
                self.context.logger.debug("%s %s: not installed: %s", self.name, cluster, ", ".join(absent))
            ended = self._ended(cluster, {r["job_id"] for r in records}, now) if store is not None else []
            if records or ended:
                yield JobBatch(records_table(records + ended), label=f"{self.name} {cluster}")

    def _ended(self, cluster: str, running: set[str], now: datetime) -> list[dict[str, Any]]:
        """Workloads this source (or the guard watching it) recorded running that the cluster no longer runs."""
        return ended_rows(self.context.store, [self.name, f"guard:{self.name}"], cluster, running, now)


def ended_rows(
    store: Store, sources: list[str], cluster: str, running: set[str], now: datetime
) -> list[dict[str, Any]]:
    states = sorted(JOB_STATES_RUNNING)
    names = JOB_SCHEMA.names
    rows = store.query(
        f"""SELECT {", ".join(f'"{n}"' for n in names)}, last_seen FROM jobs
        WHERE platform = 'kubernetes' AND starts_with(job_id, ?) AND source IN ({", ".join("?" * len(sources))})
          AND upper(state) IN ({", ".join("?" * len(states))})""",
        [f"k8s://{cluster}/", *sources, *states],
    )
    out = []
    for row in rows:
        record = dict(zip([*names, "last_seen"], row, strict=True))
        if record["job_id"] in running:
            continue
        last_seen = record.pop("last_seen")
        labels = record.get("labels")
        record["labels"] = _labels(labels)
        record.update(state="ENDED", end_time=record.get("end_time") or last_seen or now)
        out.append(record)
    return out


def _labels(value: Any) -> dict[str, str]:
    return labels_dict(value)


__all__ = [
    "DEFAULT_KINDS",
    "KubernetesJobsConfig",
    "KubernetesJobsSource",
    "cluster_client",
    "ended_rows",
    "gcp_prices",
    "list_running",
    "pricer",
    "records_table",
]
