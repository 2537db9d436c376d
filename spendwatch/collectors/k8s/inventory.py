"""Reading a cluster for the ``kubernetes-jobs`` source and the guard: nodes, live pods, their owners.

Everything goes through the official ``kubernetes`` client (an optional extra). Each kind is one
cluster-wide list, paged with ``limit``/``continue``, and answered as raw JSON
(``_preload_content=False``): a poll parses thousands of pods with ``json`` instead of building a
model object per field, and the JSON is exactly what the API server sent. Pods are listed with the
field selector ``status.phase!=Succeeded,status.phase!=Failed`` (running and pending only).

A custom resource whose CRD is not installed (no KubeRay, no Kubeflow) answers 404: that kind is
absent from the cluster, not an error, and ``Inventory.absent`` says so. Any other failure —
403 (RBAC), 5xx, a refused connection — is a ``SourceError`` of one line naming the list, the cluster
and, for 403, the permission.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from spendwatch.collectors.k8s.ids import BY_KIND, Kind
from spendwatch.errors import SourceError
from spendwatch.k8s_client import api_error_line

LIVE_PODS: Final = "status.phase!=Succeeded,status.phase!=Failed"
NODES: Final = Kind("Node", "", "", "v1", "nodes")
PODS: Final = Kind("Pod", "", "", "v1", "pods")
# Owner kinds read to find a pod's workload (and that workload's labels, start and deadline).
OWNER_KINDS: Final = ("Job", "RayJob", "RayCluster", "PyTorchJob", "TFJob", "Deployment", "StatefulSet")

Take = Callable[[], None]


@dataclass
class Inventory:
    """What one read of a cluster saw (JSON objects as the API server serves them)."""

    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)  # by node name
    pods: list[dict[str, Any]] = field(default_factory=list)
    owners: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)  # (Kind, ns, name)
    absent: list[str] = field(default_factory=list)  # kinds whose CRD is not installed
    calls: int = 0


def owner_kinds(tracked: Iterable[str]) -> list[str]:
    """The owner kinds to list for the tracked workload kinds (a RayJob's pods belong to its RayCluster)."""
    wanted = {k for k in tracked if k in OWNER_KINDS}
    if "RayJob" in wanted:
        wanted.add("RayCluster")
    return [k for k in OWNER_KINDS if k in wanted]


def read_cluster(
    api: Any,
    cluster: str,
    *,
    tracked: Iterable[str],
    page_size: int = 500,
    timeout: float = 30.0,
    take: Take | None = None,
    skip: Iterable[str] = (),
) -> Inventory:
    """Nodes, live pods and the owners of the tracked kinds (``skip``: kinds known to be absent)."""
    inventory = Inventory()
    reader = _Reader(api, cluster, page_size, timeout, take, inventory)
    inventory.nodes = {str(n["metadata"]["name"]): n for n in reader.items(NODES) or []}
    inventory.pods = reader.items(PODS, field_selector=LIVE_PODS) or []
    for name in owner_kinds(tracked):
        if name in skip:
            inventory.absent.append(name)
            continue
        kind = BY_KIND[name.lower()]
        found = reader.items(kind)
        if found is None:
            inventory.absent.append(name)
            continue
        for obj in found:
            meta = obj.get("metadata") or {}
            inventory.owners[(name, str(meta.get("namespace") or ""), str(meta.get("name") or ""))] = obj
    return inventory


@dataclass
class _Reader:
    api: Any
    cluster: str
    page_size: int
    timeout: float
    take: Take | None
    inventory: Inventory

    def items(self, kind: Kind, **params: Any) -> list[dict[str, Any]] | None:
        """Every item of a cluster-wide list, following ``continue``; ``None`` when a CRD is not installed."""
        out: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page = self._page(kind, token, params)
            if page is None:
                return None
            out += page.get("items") or []
            token = (page.get("metadata") or {}).get("continue") or None
            if not token:
                return out

    def _page(self, kind: Kind, token: str | None, params: dict[str, Any]) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        if self.take is not None:
            self.take()
        self.inventory.calls += 1
        query = {**params, "limit": self.page_size, "_request_timeout": self.timeout}
        if token:
            query["_continue"] = token
        where = f"{kind.plural} in cluster {self.cluster}"
        try:
            response = _list_call(self.api, kind)(**query, _preload_content=False)
            page: dict[str, Any] = json.loads(response.data)
        except ApiException as exc:
            if exc.status == 404 and kind.group not in ("", "apps", "batch"):
                return None  # the CRD is not installed: nothing of that kind runs here
            raise SourceError(api_error_line(exc, "list", where)) from None
        except HTTPError as exc:
            raise SourceError(f"list on {where} failed: {exc}") from None
        except ValueError as exc:
            raise SourceError(f"list on {where}: the answer is not JSON ({exc})") from None
        return page


def _list_call(api: Any, kind: Kind) -> Callable[..., Any]:
    from kubernetes import client

    if kind.plural == "nodes":
        return client.CoreV1Api(api).list_node  # type: ignore[no-any-return]
    if kind.plural == "pods":
        return client.CoreV1Api(api).list_pod_for_all_namespaces  # type: ignore[no-any-return]
    if kind.kind == "Job":
        return client.BatchV1Api(api).list_job_for_all_namespaces  # type: ignore[no-any-return]
    if kind.kind == "Deployment":
        return client.AppsV1Api(api).list_deployment_for_all_namespaces  # type: ignore[no-any-return]
    if kind.kind == "StatefulSet":
        return client.AppsV1Api(api).list_stateful_set_for_all_namespaces  # type: ignore[no-any-return]
    custom = client.CustomObjectsApi(api)

    def call(**params: Any) -> Any:
        return custom.list_cluster_custom_object(kind.group, kind.version, kind.plural, **params)

    return call


__all__ = ["LIVE_PODS", "OWNER_KINDS", "Inventory", "owner_kinds", "read_cluster"]
