"""What the Kubernetes-aware cost sources share: which workload labels name the owner and the workload.

EKS split cost allocation (``aws-data-export``), GKE cost allocation (``gcp-billing-export``) and
OpenCost (``opencost``) all see pods with their labels. A source's ``kubernetes:`` block says which
label keys name a workload's owner (first match wins, before the source's ``owner_tags``), which
name the workload where the source does not (GKE's export has no workload name), and which other
labels to keep. Kept labels are stored as tags ``k8s-label/<key>``, which monitors name as
``label:<key>``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from pydantic import Field, field_validator

from spendwatch.plugins import StrictModel
from spendwatch.store.schema import K8S_LABEL_PREFIX

# A Kubernetes label key: an optional DNS-subdomain prefix and a name of at most 63 characters.
_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")

DEFAULT_OWNER_LABELS = ["owner", "spendwatch/owner", "app.kubernetes.io/owner", "team"]
DEFAULT_WORKLOAD_LABELS = [
    "batch.kubernetes.io/job-name",
    "job-name",
    "training.kubeflow.org/job-name",
    "ray.io/cluster",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/name",
    "app",
]


class KubernetesLabels(StrictModel):
    """Workload labels a cost source reads (``kubernetes:`` in aws-data-export, gcp-billing-export, opencost)."""

    enabled: bool = Field(default=True, description="read cluster, namespace, workload and labels")
    owner_labels: list[str] = Field(
        default_factory=lambda: list(DEFAULT_OWNER_LABELS),
        description="workload label keys naming the owner, first match wins (before owner_tags)",
    )
    workload_labels: list[str] = Field(
        default_factory=lambda: list(DEFAULT_WORKLOAD_LABELS),
        description="label keys naming the workload where the source does not say (GKE), first match wins",
    )
    keep_labels: list[str] = Field(
        default_factory=list, description="more label keys stored as tags k8s-label/<key> (monitors: label:<key>)"
    )

    @field_validator("owner_labels", "workload_labels", "keep_labels")
    @classmethod
    def _keys(cls, keys: list[str]) -> list[str]:
        for key in keys:
            if not _LABEL_KEY.match(key):
                raise ValueError(f"{key!r} is not a Kubernetes label key")
        return keys

    def stored_labels(self) -> list[str]:
        """Every label key stored as a tag: owner labels first, then the kept ones (no repeats)."""
        return list(dict.fromkeys([*self.owner_labels, *self.keep_labels]))


def label_tag(key: str) -> str:
    return K8S_LABEL_PREFIX + key


def first_label(labels: Mapping[str, str], keys: list[str]) -> str | None:
    for key in keys:
        value = labels.get(key)
        if value:
            return str(value)
    return None
