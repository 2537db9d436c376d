"""Running Kubernetes workloads as job records: who owns them, what they request, what they cost so far.

From one ``Inventory`` (nodes, live pods, owners):

* **Workload** — each pod belongs to the top-most tracked controller above it: a Job (a CronJob's
  run is its Job, labelled ``k8s:cronjob``), a RayJob (through the RayCluster it owns), a RayCluster,
  a PyTorchJob / TFJob, a Deployment (from its ReplicaSet's name and ``pod-template-hash``), a
  StatefulSet, or the pod itself when nothing controls it. Untracked kinds (DaemonSets …) are not
  recorded, but their pods still take their share of a node.
* **Requests** — a pod's effective request per resource, as the scheduler counts it: the larger of
  its containers plus sidecars and its heaviest init step, plus the pod overhead; GPUs are the
  configured extended resources (``nvidia.com/gpu`` …).
* **Node price** — the node's instance type (``node.kubernetes.io/instance-type``) priced from the
  tables spendwatch already has: EC2 on-demand for an EKS node (``aws_prices``), the GCE machine plus
  its attached GPUs (``cloud.google.com/gke-accelerator`` × the node's GPUs) for a GKE node
  (``gcp_prices``; accelerator-optimised types include them), or ``prices:`` in the config, which
  win. A spot node is priced at on-demand × ``spot_factor`` (1.0 unless configured: a guard
  overestimates rather than misses). A type none of them knows is unpriced, and the record says so.
* **Share** — GPU-weighted where GPUs are requested: on a node whose GPUs some pod requests, those
  pods share the node, each by its dominant share (the largest of its GPUs, CPU and memory over the
  node's allocatable: 8 of 8 GPUs is the whole node, 1 of 8 GPUs with all the CPUs is too), and the
  pods requesting no GPU there (DaemonSets, sidecars of the platform) pay nothing. On any other node
  each pod pays its dominant share of CPU and memory. Where a node's shares add up to more than one
  they are scaled down, so a node is never counted twice; unrequested capacity is charged to nobody:
  the figures are what the workloads hold, not the whole bill.
* **Cost** — cost so far is the sum over its live pods of share × node $/hour × hours since each pod
  started (pods that already finished are not seen: the billing sources count them); the burn rate
  is the same sum per hour now; the projection runs that rate to the workload's own
  ``activeDeadlineSeconds`` when it has one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from spendwatch.collectors.aws.prices import PriceTable as AwsPrices
from spendwatch.collectors.gcp.prices import PriceTable as GcpPrices
from spendwatch.collectors.k8s.ids import workload_uri
from spendwatch.collectors.k8s.inventory import Inventory

INSTANCE_TYPE_LABELS: Final = ("node.kubernetes.io/instance-type", "beta.kubernetes.io/instance-type")
NODEGROUP_LABELS: Final = (
    "eks.amazonaws.com/nodegroup",
    "karpenter.sh/nodepool",
    "cloud.google.com/gke-nodepool",
    "alpha.eksctl.io/nodegroup-name",
)
ACCELERATOR_LABELS: Final = (
    "cloud.google.com/gke-accelerator",
    "k8s.amazonaws.com/accelerator",
    "nvidia.com/gpu.product",
)
_SPOT: Final = (
    ("eks.amazonaws.com/capacityType", "SPOT"),
    ("karpenter.sh/capacity-type", "spot"),
    ("cloud.google.com/gke-spot", "true"),
    ("cloud.google.com/gke-preemptible", "true"),
)
DEFAULT_GPU_RESOURCES: Final = ("nvidia.com/gpu", "amd.com/gpu", "aws.amazon.com/neuron", "google.com/tpu")
# Labels every pod of a controller carries that say nothing about the workload.
_NOISE: Final = frozenset({"pod-template-hash", "controller-uid", "batch.kubernetes.io/controller-uid",
                           "controller-revision-hash", "statefulset.kubernetes.io/pod-name"})  # fmt: skip


def quantity(value: Any) -> float:
    """A Kubernetes quantity (``500m``, ``64Gi``, ``2``) as a number; 0 when absent or malformed."""
    if value is None or value == "":
        return 0.0
    from kubernetes.utils import parse_quantity

    try:
        parsed: Decimal = parse_quantity(value)
    except (ValueError, TypeError, ArithmeticError):
        return 0.0
    return float(parsed)


def timestamp(value: Any) -> datetime | None:
    """An RFC 3339 timestamp as the API serves it (``2026-11-23T09:00:00Z``), in UTC."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


# -- requests ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Requests:
    cpu: float = 0.0  # cores
    memory: float = 0.0  # bytes
    gpus: float = 0.0

    def __add__(self, other: Requests) -> Requests:
        return Requests(self.cpu + other.cpu, self.memory + other.memory, self.gpus + other.gpus)

    def top(self, other: Requests) -> Requests:
        return Requests(max(self.cpu, other.cpu), max(self.memory, other.memory), max(self.gpus, other.gpus))


def _container(container: Mapping[str, Any], gpu_resources: Sequence[str]) -> Requests:
    resources = container.get("resources") or {}
    requests = resources.get("requests") or {}
    limits = resources.get("limits") or {}

    def amount(name: str) -> float:
        # The API server copies a limit into a missing request (extended resources must be equal).
        return quantity(requests.get(name, limits.get(name)))

    return Requests(amount("cpu"), amount("memory"), sum(amount(name) for name in gpu_resources))


def pod_requests(pod: Mapping[str, Any], gpu_resources: Sequence[str] = DEFAULT_GPU_RESOURCES) -> Requests:
    """The pod's effective requests, as the scheduler counts them (sidecars and init steps included)."""
    spec = pod.get("spec") or {}
    running = Requests()
    for container in spec.get("containers") or []:
        running = running + _container(container, gpu_resources)
    sidecars, init_peak = Requests(), Requests()
    for container in spec.get("initContainers") or []:
        wanted = _container(container, gpu_resources)
        if container.get("restartPolicy") == "Always":  # a sidecar: it keeps running beside the containers
            sidecars = sidecars + wanted
            init_peak = init_peak.top(sidecars)
        else:
            init_peak = init_peak.top(sidecars + wanted)
    overhead = spec.get("overhead") or {}
    extra = Requests(quantity(overhead.get("cpu")), quantity(overhead.get("memory")))
    return (running + sidecars).top(init_peak) + extra


# -- nodes ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodePrice:
    """One node: what it offers, and its $/hour (``None``: unpriced) and how that was found."""

    name: str
    instance_type: str | None
    allocatable: Requests
    hourly: float | None
    method: str
    nodegroup: str | None = None
    spot: bool = False


def _first(labels: Mapping[str, str], keys: Sequence[str]) -> str | None:
    return next((str(labels[k]) for k in keys if labels.get(k)), None)


@dataclass(frozen=True)
class NodePricer:
    """Prices nodes of one cluster (``provider``: aws, gcp or kubernetes) in ``currency``."""

    provider: str
    region: str | None
    overrides: Mapping[str, float] = field(default_factory=dict)  # node type → $/hour (any provider)
    aws: AwsPrices | None = None
    gcp: GcpPrices | None = None
    spot_factor: float = 1.0
    gpu_resources: Sequence[str] = DEFAULT_GPU_RESOURCES

    @property
    def currency(self) -> str:
        return self.gcp.currency if self.provider == "gcp" and self.gcp is not None else "USD"

    def price(self, node: Mapping[str, Any]) -> NodePrice:
        meta = node.get("metadata") or {}
        labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
        status = node.get("status") or {}
        offered = status.get("allocatable") or status.get("capacity") or {}
        allocatable = Requests(
            quantity(offered.get("cpu")),
            quantity(offered.get("memory")),
            sum(quantity(offered.get(name)) for name in self.gpu_resources),
        )
        instance_type = _first(labels, INSTANCE_TYPE_LABELS)
        spot = any(labels.get(key, "").lower() == value.lower() for key, value in _SPOT)
        hourly, method = self._hourly(instance_type, labels, allocatable)
        if hourly is not None and spot:
            hourly *= self.spot_factor
            method += " (spot node at on-demand" + (f" × {self.spot_factor:g})" if self.spot_factor != 1 else ")")
        return NodePrice(
            name=str(meta.get("name") or ""),
            instance_type=instance_type,
            allocatable=allocatable,
            hourly=hourly,
            method=method,
            nodegroup=_first(labels, NODEGROUP_LABELS),
            spot=spot,
        )

    def _hourly(
        self, instance_type: str | None, labels: Mapping[str, str], allocatable: Requests
    ) -> tuple[float | None, str]:
        if instance_type is None:
            return None, "unpriced: the node has no instance-type label"
        if instance_type in self.overrides:
            return float(self.overrides[instance_type]), "config price"
        if self.provider == "aws" and self.aws is not None:
            found = self.aws.instance(instance_type, self.region or "us-east-1")
            if found is not None:
                return found.hourly, f"EC2 on-demand ({found.method})"
        if self.provider == "gcp" and self.gcp is not None:
            return self._gce(instance_type, labels, allocatable)
        return None, f"unpriced: no price for {instance_type} (set prices:)"

    def _gce(self, machine: str, labels: Mapping[str, str], allocatable: Requests) -> tuple[float | None, str]:
        assert self.gcp is not None
        base = self.gcp.machine_hourly(machine)
        if base is None:
            return None, f"unpriced: no price for {machine} (set prices:)"
        accelerator = _first(labels, ACCELERATOR_LABELS)
        if not allocatable.gpus or self.gcp.includes_gpus(machine) or accelerator is None:
            return base, f"Compute Engine ({self.gcp.source})"
        per_gpu = self.gcp.gpu_hourly(accelerator)
        if per_gpu is None:
            return None, f"unpriced: no price for GPU {accelerator} (set gcp_prices.gpu_hour)"
        gpus = allocatable.gpus
        return base + gpus * per_gpu, f"Compute Engine ({self.gcp.source}) + {gpus:g} × {accelerator}"


# -- workloads -----------------------------------------------------------------------------------


@dataclass
class _Pod:
    obj: Mapping[str, Any]
    namespace: str
    name: str
    labels: dict[str, str]
    requests: Requests
    node: NodePrice | None
    start: datetime | None
    running: bool
    share: float = 0.0


@dataclass
class Workload:
    """One tracked workload with its live pods (the thing a guard cap and a kill-switch action apply to)."""

    kind: str
    namespace: str
    name: str
    obj: Mapping[str, Any] | None
    pods: list[_Pod] = field(default_factory=list)
    parent: tuple[str, str] | None = None  # (kind, name) of what created it (a Job's CronJob)


def _labels(obj: Mapping[str, Any] | None) -> dict[str, str]:
    meta = (obj or {}).get("metadata") or {}
    return {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}


def _controller(obj: Mapping[str, Any] | None) -> tuple[str, str] | None:
    refs = ((obj or {}).get("metadata") or {}).get("ownerReferences") or []
    chosen = next((r for r in refs if r.get("controller")), refs[0] if refs else None)
    return (str(chosen.get("kind")), str(chosen.get("name"))) if chosen else None


def _chain(pod: _Pod, owners: Mapping[tuple[str, str, str], Mapping[str, Any]]) -> list[tuple[str, str]]:
    """The pod's controllers from the bottom up: what it could be recorded as."""
    ns = pod.namespace
    found = _controller(pod.obj)
    if found is None:
        return [("Pod", pod.name)]
    kind, name = found
    if kind == "ReplicaSet":
        suffix = "-" + pod.labels.get("pod-template-hash", "\0")
        return [("Deployment", name.removesuffix(suffix))] if name.endswith(suffix) else [(kind, name)]
    chain = [(kind, name)]
    above = _controller(owners.get((kind, ns, name)))
    if kind == "RayCluster" and above is not None and above[0] == "RayJob":
        chain.append(above)
    return chain


def group_workloads(
    pods: Sequence[_Pod], owners: Mapping[tuple[str, str, str], Mapping[str, Any]], tracked: Sequence[str]
) -> list[Workload]:
    """Pods by the top-most tracked controller above each (pods of untracked kinds are left out)."""
    found: dict[tuple[str, str, str], Workload] = {}
    for pod in pods:
        chain = [link for link in _chain(pod, owners) if link[0] in tracked]
        if not chain:
            continue
        kind, name = chain[-1]
        key = (kind, pod.namespace, name)
        if key not in found:
            obj = pod.obj if kind == "Pod" else owners.get(key)
            parent = _controller(obj) if kind == "Job" else None
            cronjob = parent if parent is not None and parent[0] == "CronJob" else None
            found[key] = Workload(kind, pod.namespace, name, obj, parent=cronjob)
        found[key].pods.append(pod)
    return sorted(found.values(), key=lambda w: (w.namespace, w.kind, w.name))


def _pods(inventory: Inventory, pricer: NodePricer, nodes: Mapping[str, NodePrice]) -> list[_Pod]:
    out = []
    for obj in inventory.pods:
        meta = obj.get("metadata") or {}
        status = obj.get("status") or {}
        node_name = (obj.get("spec") or {}).get("nodeName")
        out.append(
            _Pod(
                obj=obj,
                namespace=str(meta.get("namespace") or ""),
                name=str(meta.get("name") or ""),
                labels=_labels(obj),
                requests=pod_requests(obj, pricer.gpu_resources),
                node=nodes.get(str(node_name)) if node_name else None,
                start=timestamp(status.get("startTime")) or timestamp(meta.get("creationTimestamp")),
                running=str(status.get("phase")) == "Running",
            )
        )
    _share(out)
    return out


def _share(pods: Sequence[_Pod]) -> None:
    """Each pod's share of its node (module doc: GPU-weighted), scaled so a node's never add up to more than one."""
    by_node: dict[str, list[_Pod]] = {}
    for pod in pods:
        if pod.node is not None:
            by_node.setdefault(pod.node.name, []).append(pod)
    for members in by_node.values():
        offered = members[0].node.allocatable if members[0].node is not None else Requests()
        gpu_node = offered.gpus > 0 and any(p.requests.gpus > 0 for p in members)
        for pod in members:
            wanted = pod.requests
            if gpu_node and not wanted.gpus:
                pod.share = 0.0  # the GPU workloads pay for a GPU node; a DaemonSet pod rides along
                continue
            parts = [wanted.gpus / offered.gpus] if offered.gpus and wanted.gpus else []
            parts += [wanted.cpu / offered.cpu] if offered.cpu else []
            parts += [wanted.memory / offered.memory] if offered.memory else []
            pod.share = min(1.0, max(parts, default=0.0))
        total = sum(p.share for p in members)
        if total > 1.0:
            for pod in members:
                pod.share /= total


# -- records -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterPlace:
    """Where a cluster's workloads are recorded: its name and its provider, account and region."""

    cluster: str
    provider: str
    account: str | None
    region: str | None


def _deadline(workload: Workload) -> int | None:
    spec = (workload.obj or {}).get("spec") or {}
    value = spec.get("activeDeadlineSeconds") or (spec.get("runPolicy") or {}).get("activeDeadlineSeconds")
    try:
        return int(value) if value else None
    except (TypeError, ValueError):
        return None


def _start(workload: Workload) -> datetime | None:
    status = (workload.obj or {}).get("status") or {}
    meta = (workload.obj or {}).get("metadata") or {}
    own = timestamp(status.get("startTime")) or timestamp(meta.get("creationTimestamp"))
    starts = [p.start for p in workload.pods if p.start is not None]
    return own or (min(starts) if starts else None)


def owner_label(labels: Sequence[Mapping[str, str]], keys: Sequence[str]) -> tuple[str | None, str | None]:
    """(owner, ``label:<key>``) from the first owner key found, the workload's labels before its pods'."""
    for key in keys:
        for candidate in labels:
            if candidate.get(key):
                return str(candidate[key]), f"label:{key}"
    return None, None


def workload_record(
    workload: Workload,
    place: ClusterPlace,
    *,
    now: datetime,
    owner_labels: Sequence[str],
    currency: str,
) -> dict[str, Any]:
    """One JOB_SCHEMA record (labels as a dict), with ``burn_rate`` and ``burn_method`` for the guard."""
    own = _labels(workload.obj)
    pod_labels = workload.pods[0].labels if workload.pods else {}
    owner, owner_source = owner_label([own, pod_labels], owner_labels)
    labels = {k: v for k, v in (own or pod_labels).items() if k not in _NOISE}
    cost, rate, unpriced = 0.0, 0.0, 0
    priced_nodes: Counter[str] = Counter()
    node_cost: dict[str, tuple[float, NodePrice]] = {}
    gpus = sum(p.requests.gpus for p in workload.pods)
    for pod in workload.pods:
        if pod.node is None or not pod.running:
            continue  # pending: no node holds it yet, nothing is billed for it
        if pod.node.hourly is None:
            unpriced += 1
            continue
        hourly = pod.share * pod.node.hourly
        hours = max((now - pod.start).total_seconds(), 0.0) / 3600.0 if pod.start else 0.0
        cost += hourly * hours
        rate += hourly
        priced_nodes[pod.node.name] += 1
        spent, _ = node_cost.get(pod.node.name, (0.0, pod.node))
        node_cost[pod.node.name] = (spent + hourly, pod.node)
    running = any(p.running for p in workload.pods)
    start = _start(workload)
    deadline = _deadline(workload)
    projected = None
    if deadline and start is not None:
        remaining = max((start + timedelta(seconds=deadline) - now).total_seconds(), 0.0) / 3600.0
        projected = cost + rate * remaining
    main = max(node_cost.values(), key=lambda item: item[0], default=None)
    nodes = {p.node.name for p in workload.pods if p.node is not None and p.running}
    priced = bool(priced_nodes) or not unpriced
    record: dict[str, Any] = {
        "platform": "kubernetes",
        "job_id": workload_uri(place.cluster, workload.namespace, workload.kind, workload.name),
        "provider": place.provider,
        "sub_account_id": place.account,
        "region_id": place.region,
        "name": workload.name,
        "user": owner,
        "owner": owner,
        "owner_source": owner_source,
        "state": "RUNNING" if running else "PENDING",
        "start_time": start,
        "end_time": None,
        "instance_type": main[1].instance_type if main else None,
        "instance_count": len(nodes) or None,
        "max_runtime_seconds": deadline,
        "estimated_cost": round(cost, 6) if priced else None,
        "projected_cost": round(projected, 6) if projected is not None and priced else None,
        "cost_method": _method(workload, gpus, node_cost, unpriced),
        "billing_currency": currency,
        "resource_id": workload_uri(place.cluster, workload.namespace, workload.kind, workload.name),
        "labels": {
            **labels,
            "k8s:cluster": place.cluster,
            "k8s:namespace": workload.namespace,
            "k8s:kind": workload.kind,
            "k8s:pods": str(len(workload.pods)),
            **({"k8s:gpus": f"{gpus:g}"} if gpus else {}),
            **({"k8s:nodegroup": main[1].nodegroup} if main and main[1].nodegroup else {}),
            **({"k8s:cronjob": workload.parent[1]} if workload.parent else {}),
        },
        "burn_rate": round(rate, 6) if priced else None,
        "burn_method": "its live pods' shares of their nodes' prices now",
    }
    return record


def _method(workload: Workload, gpus: float, node_cost: Mapping[str, tuple[float, NodePrice]], unpriced: int) -> str:
    if not node_cost:
        if unpriced:
            reason = next((p.node.method for p in workload.pods if p.node is not None and p.node.hourly is None), "")
            return f"{unpriced} pod(s) on unpriced nodes: {reason}"
        return "no pod is running on a node yet (pending): nothing billed so far"
    types = Counter(node.instance_type or "?" for _, node in node_cost.values())
    prices = {node.instance_type: (node.hourly, node.method) for _, node in node_cost.values()}
    shown = ", ".join(
        f"{count} × {kind} (${prices[kind][0] or 0:,.4g}/h, {prices[kind][1]})" for kind, count in types.most_common()
    )
    held = f"{gpus:g} GPU(s) requested; " if gpus else ""
    tail = f"; {unpriced} pod(s) on unpriced nodes not counted" if unpriced else ""
    return (
        f"{held}{len(workload.pods)} pod(s) on {shown}: each pod pays its share of its node's price "
        f"(GPU-weighted where GPUs are requested, else its larger CPU or memory share) since it started{tail}"
    )


def workload_records(
    inventory: Inventory,
    place: ClusterPlace,
    pricer: NodePricer,
    *,
    now: datetime,
    tracked: Sequence[str],
    owner_labels: Sequence[str],
    namespaces: Any = None,
) -> list[dict[str, Any]]:
    """Every tracked workload with a live pod in the inventory, as a job record (``namespaces``: a filter)."""
    nodes = {name: pricer.price(node) for name, node in inventory.nodes.items()}
    pods = _pods(inventory, pricer, nodes)
    selected = [p for p in pods if namespaces is None or namespaces(p.namespace)]
    return [
        workload_record(w, place, now=now, owner_labels=owner_labels, currency=pricer.currency)
        for w in group_workloads(selected, inventory.owners, tracked)
    ]


__all__ = [
    "DEFAULT_GPU_RESOURCES",
    "ClusterPlace",
    "NodePrice",
    "NodePricer",
    "Requests",
    "Workload",
    "group_workloads",
    "owner_label",
    "pod_requests",
    "quantity",
    "timestamp",
    "workload_record",
    "workload_records",
]
