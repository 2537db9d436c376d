"""``spendwatch doctor`` for Kubernetes: can the source list what it reads, can the kill switch patch what its
rules act on?

Both ask the API server itself with a ``SelfSubjectAccessReview`` per permission (every authenticated
identity may create one): the answer is the cluster's RBAC for the identity spendwatch runs as, with
no object read or changed.

* ``kubernetes-jobs`` sources — per cluster, ``list`` across all namespaces of nodes, pods and each
  tracked owner kind (what ``collectors.k8s.inventory`` lists). A missing one fails, naming the
  ClusterRole that grants it (``deploy/kubernetes/rbac-collector.yaml``).
* the kill switch — per cluster under ``killswitch.kubernetes.clusters`` it can reach, every
  ``<group>/<resource>[/<subresource>]:<verb>`` the rules' Kubernetes actions declare; a missing
  permission of a rule that may act fails, one of a dry-run rule (or only undo's) warns. A cluster
  that is only named (``auth: none``, no server) is skipped: nothing can act there.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from spendwatch.doctor.base import (
    DoctorContext,
    Finding,
    PermissionNeed,
    one_line,
    permission_findings,
)
from spendwatch.errors import ActionError, SourceError

CORE = frozenset({"pods", "nodes", "namespaces", "services", "configmaps", "secrets", "events"})
COLLECTOR_FIX = (
    "apply deploy/kubernetes/rbac-collector.yaml (ClusterRole spendwatch-collector) in this cluster and bind it "
    "to the identity spendwatch runs as"
)
KILLSWITCH_FIX = (
    "apply deploy/kubernetes/rbac-killswitch.yaml (ClusterRole spendwatch-killswitch; spendwatch-killswitch-pods "
    "only for k8s-pod-delete) and bind it to the identity the kill switch runs as"
)


def parse_rule(rule: str) -> tuple[str, str, str, str]:
    """``apps/deployments/scale:patch`` → (group, resource, subresource, verb); the core group is ``""``."""
    path, _, verb = rule.rpartition(":")
    parts = path.split("/")
    if parts[0] in CORE:
        return "", parts[0], "/".join(parts[1:]), verb
    return parts[0], parts[1] if len(parts) > 1 else "", "/".join(parts[2:]), verb


def allowed(api: Any, rule: str, namespace: str | None = None) -> bool:
    """Whether the API server would let this identity do ``rule`` (cluster-wide unless ``namespace``)."""
    from kubernetes import client

    group, resource, subresource, verb = parse_rule(rule)
    attributes = client.V1ResourceAttributes(
        group=group, resource=resource, subresource=subresource or None, verb=verb, namespace=namespace
    )
    review = client.V1SelfSubjectAccessReview(spec=client.V1SelfSubjectAccessReviewSpec(resource_attributes=attributes))
    answer = client.AuthorizationV1Api(api).create_self_subject_access_review(review)
    return bool(answer.status and answer.status.allowed)


def _missing(api: Any, rules: list[str]) -> list[str]:
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        return [rule for rule in rules if not allowed(api, rule)]
    except ApiException as exc:
        raise SourceError(f"the API server refused an access review: {exc.status} {exc.reason}") from None
    except HTTPError as exc:
        raise SourceError(f"cannot reach the API server: {one_line(exc)}") from None


# -- sources -------------------------------------------------------------------------------------------


def probe_kubernetes_jobs(source: Any, ctx: DoctorContext) -> Iterator[Finding]:
    from spendwatch.collectors.k8s.ids import BY_KIND
    from spendwatch.collectors.k8s.inventory import owner_kinds
    from spendwatch.collectors.k8s.jobs import cluster_client

    subject = f"{source.name} ({source.type})"
    wanted = ["nodes:list", "pods:list"]
    for name in owner_kinds(source.kinds):
        kind = BY_KIND[name.lower()]
        wanted.append(f"{kind.group}/{kind.plural}:list")
    for cluster in source.clusters:
        where = f"{subject} cluster {cluster}"
        try:
            missing = _missing(cluster_client(source, cluster, ctx.clients), wanted)
        except SourceError as exc:
            yield Finding("source", where, "fail", str(exc), fix="check the cluster's connection (context, auth)")
            continue
        if missing:
            text = ", ".join(missing)
            yield Finding("source", where, "fail", f"cannot list across namespaces: {text}", fix=COLLECTOR_FIX)
        else:
            yield Finding("source", where, "ok", f"may list {len(wanted)} kind(s) across all namespaces")


SOURCE_PROBES = {"kubernetes-jobs": probe_kubernetes_jobs}


# -- the kill switch -------------------------------------------------------------------------------------


def check_killswitch(ctx: DoctorContext, needs: list[PermissionNeed]) -> list[Finding]:
    """Every Kubernetes permission the rules need, in every cluster the kill switch can reach."""
    clusters = ctx.config.killswitch.kubernetes.clusters
    if not needs or not clusters:
        return []
    findings: list[Finding] = []
    for name, connection in clusters.items():
        subject = f"kubernetes cluster {name}"
        if not connection.reachable:
            note = "only named (auth: none, no server): never acted on"
            findings.append(Finding("killswitch", subject, "skip", note))
            continue
        try:
            api = _client(ctx, name, connection)
            missing = set(_missing(api, sorted({n.permission for n in needs})))
        except (SourceError, ActionError) as exc:
            findings.append(Finding("killswitch", subject, "fail", str(exc), fix="check the cluster's connection"))
            continue
        found = permission_findings(subject, [n for n in needs if n.permission in missing], KILLSWITCH_FIX)
        findings += found or [Finding("killswitch", subject, "ok", f"every permission the rules need ({len(needs)})")]
    return findings


def _client(ctx: DoctorContext, name: str, connection: Any) -> Any:
    for key in (f"k8s:{name}", "k8s"):
        if key in ctx.clients:
            return ctx.clients[key]
    from spendwatch.k8s_client import api_client

    return api_client(connection)


__all__ = ["SOURCE_PROBES", "allowed", "check_killswitch", "parse_rule", "probe_kubernetes_jobs"]
