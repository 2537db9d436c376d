"""Kubernetes workloads as the collectors record them and the kill switch targets them: kinds, resource types
and canonical ids (a leaf both packages share; the kill switch imports collectors, never the other way).

A workload is named ``k8s://<cluster>/<namespace>/<kind>/<name>`` in job records and cost lines
(``cluster`` is the name the ``killswitch.kubernetes.clusters`` / ``kubernetes-jobs`` config gives it).
As a ``Target`` it is provider ``kubernetes``, account = cluster, region = namespace and resource id
``<namespace>/<name>``. This module imports nothing from the ``kubernetes`` package, so the records,
rules and protection checks work without the optional extra installed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Kind:
    """A workload kind the kill switch knows: where it lives in the API and what may be done to it."""

    kind: str
    resource_type: str
    group: str  # "" for the core API
    version: str
    plural: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


KINDS: Final[tuple[Kind, ...]] = (
    Kind("Deployment", "k8s-deployment", "apps", "v1", "deployments"),
    Kind("StatefulSet", "k8s-statefulset", "apps", "v1", "statefulsets"),
    Kind("Job", "k8s-job", "batch", "v1", "jobs"),
    Kind("CronJob", "k8s-cronjob", "batch", "v1", "cronjobs"),
    Kind("Pod", "k8s-pod", "", "v1", "pods"),
    Kind("RayJob", "k8s-rayjob", "ray.io", "v1", "rayjobs"),
    Kind("RayCluster", "k8s-raycluster", "ray.io", "v1", "rayclusters"),
    Kind("PyTorchJob", "k8s-pytorchjob", "kubeflow.org", "v1", "pytorchjobs"),
    Kind("TFJob", "k8s-tfjob", "kubeflow.org", "v1", "tfjobs"),
)
BY_KIND: Final = {k.kind.lower(): k for k in KINDS}
BY_TYPE: Final = {k.resource_type: k for k in KINDS}
_ID = re.compile(r"^k8s://(?P<cluster>[^/]+)/(?P<namespace>[^/]+)/(?P<kind>[^/]+)/(?P<name>[^/]+)$")
# DNS-1123 names (namespaces, workload names) and cluster names as configured.
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


@dataclass(frozen=True)
class WorkloadRef:
    cluster: str
    namespace: str
    kind: Kind
    name: str

    @property
    def uri(self) -> str:
        return workload_uri(self.cluster, self.namespace, self.kind.kind, self.name)

    @property
    def resource_id(self) -> str:
        return f"{self.namespace}/{self.name}"


def workload_uri(cluster: str, namespace: str, kind: str, name: str) -> str:
    return f"k8s://{cluster}/{namespace}/{kind}/{name}"


def parse_workload(value: str | None) -> WorkloadRef | None:
    """``k8s://cluster/ns/Kind/name`` → a reference; ``None`` for anything else (never raises)."""
    if not value:
        return None
    match = _ID.match(value.strip())
    if match is None:
        return None
    kind = BY_KIND.get(match["kind"].lower())
    if kind is None or not all(_NAME.match(match[p]) for p in ("namespace", "name")):
        return None
    return WorkloadRef(match["cluster"], match["namespace"], kind, match["name"])


def split_resource_id(resource_id: str) -> tuple[str, str]:
    """``namespace/name`` → (namespace, name); ``ValueError`` on anything else (hostile ids never widen)."""
    namespace, sep, name = resource_id.partition("/")
    if not sep or not _NAME.match(namespace) or not _NAME.match(name):
        raise ValueError(f"{resource_id!r} is not '<namespace>/<name>'")
    return namespace, name
