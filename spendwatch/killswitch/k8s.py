"""Kubernetes actions, through the official ``kubernetes`` client (an optional extra).

=========================  =======================================  ===================================
action                     what it changes                          undo
=========================  =======================================  ===================================
k8s-deployment-scale-to-   the ``scale`` subresource's replicas → 0  replicas back to the journaled count
 zero / k8s-statefulset-
k8s-job-suspend /          ``spec.suspend: true`` (the Job           ``spec.suspend: false`` (pods come
 k8s-cronjob-suspend        controller deletes its running pods;     back; the CronJob schedules again)
                            a CronJob stops scheduling)
k8s-rayjob-suspend /       ``spec.suspend: true`` (KubeRay deletes   ``spec.suspend: false``
 k8s-raycluster-suspend     the Ray cluster's pods)
k8s-pytorchjob-suspend /   ``spec.runPolicy.suspend: true``          ``spec.runPolicy.suspend: false``
 k8s-tfjob-suspend          (Kubeflow training operator)
k8s-pod-delete             deletes the pod (irreversible: opt-in)   none
=========================  =======================================  ===================================

Every change is a patch carrying the ``resourceVersion`` the re-read saw (a delete carries it as a
precondition), so an object changed by anyone between the re-read and the act is a 409 Conflict:
the action fails saying so and nothing is changed — never a blind overwrite. Dry-run asks the API
server itself (``dryRun=All``): admission, validation and RBAC are checked, nothing is persisted.
Permissions are RBAC rules written ``<group>/<resource>:<verb>`` (core group: ``<resource>:<verb>``);
``deploy/kubernetes/rbac-killswitch.yaml`` grants exactly these.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field

from spendwatch.collectors.k8s.ids import BY_TYPE, Kind, split_resource_id
from spendwatch.errors import ActionError
from spendwatch.k8s_client import api_error_line
from spendwatch.killswitch.base import Action, Observed, Outcome, Target, register
from spendwatch.plugins import StrictModel


class K8sAction(Action):
    """What every Kubernetes action shares: reading the object, conflict-safe patches, one-line errors."""

    provider = "kubernetes"

    @property
    def kind(self) -> Kind:
        return BY_TYPE[self.resource_type]

    # -- talking to the API ---------------------------------------------------------------------

    def _names(self, target: Target) -> tuple[str, str]:
        try:
            return split_resource_id(target.resource_id)
        except ValueError as exc:
            raise ActionError(f"{target.resource_type}: {exc}") from None

    def _api(self, target: Target) -> Any:
        return self.context.k8s_client(target.account)

    def _where(self, target: Target) -> str:
        return f"{self.kind.kind} {target.resource_id} in cluster {target.account}"

    def _call(self, operation: str, target: Target, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            if exc.status == 409:
                raise ActionError(
                    f"{operation} on {self._where(target)} refused: it changed since it was re-read "
                    "(resourceVersion conflict); nothing was changed"
                ) from None
            raise ActionError(api_error_line(exc, operation, self._where(target))) from None
        except HTTPError as exc:
            raise ActionError(f"{operation} on {self._where(target)} failed: {exc}") from None

    def read(self, target: Target) -> dict[str, Any] | None:
        """The object as the API serves it (a JSON dict), or ``None`` when it is gone."""
        namespace, name = self._names(target)
        api = self._api(target)  # first: a missing extra or an unreachable cluster is a one-line ActionError
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        kind = self.kind
        try:
            if kind.group in ("apps", "batch", ""):
                method = {
                    "Deployment": (client.AppsV1Api, "read_namespaced_deployment"),
                    "StatefulSet": (client.AppsV1Api, "read_namespaced_stateful_set"),
                    "Job": (client.BatchV1Api, "read_namespaced_job"),
                    "CronJob": (client.BatchV1Api, "read_namespaced_cron_job"),
                    "Pod": (client.CoreV1Api, "read_namespaced_pod"),
                }[kind.kind]
                found = getattr(method[0](api), method[1])(name, namespace)
                data: dict[str, Any] = api.sanitize_for_serialization(found)
                return data
            custom = client.CustomObjectsApi(api).get_namespaced_custom_object(
                kind.group, kind.version, namespace, kind.plural, name
            )
            return dict(custom)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise ActionError(api_error_line(exc, "get", self._where(target))) from None
        except HTTPError as exc:
            raise ActionError(f"get on {self._where(target)} failed: {exc}") from None

    def patch(self, target: Target, body: dict[str, Any], *, dry_run: bool = False, subresource: str = "") -> Any:
        namespace, name = self._names(target)
        api = self._api(target)
        from kubernetes import client

        kind = self.kind
        extra = {"dry_run": "All"} if dry_run else {}
        if kind.group in ("apps", "batch"):
            method = {
                ("Deployment", "scale"): (client.AppsV1Api, "patch_namespaced_deployment_scale"),
                ("StatefulSet", "scale"): (client.AppsV1Api, "patch_namespaced_stateful_set_scale"),
                ("Job", ""): (client.BatchV1Api, "patch_namespaced_job"),
                ("CronJob", ""): (client.BatchV1Api, "patch_namespaced_cron_job"),
            }[(kind.kind, subresource)]
            return self._call("patch", target, getattr(method[0](api), method[1]), name, namespace, body, **extra)
        return self._call(
            "patch",
            target,
            client.CustomObjectsApi(api).patch_namespaced_custom_object,
            kind.group,
            kind.version,
            namespace,
            kind.plural,
            name,
            body,
            **extra,
        )

    # -- what the object says -------------------------------------------------------------------

    def state_of(self, obj: Mapping[str, Any]) -> str:
        raise NotImplementedError

    def describe(self, target: Target) -> Observed | None:
        obj = self.read(target)
        if obj is None:
            return None
        metadata = obj.get("metadata") or {}
        labels = {str(k): str(v) for k, v in (metadata.get("labels") or {}).items()}
        snapshot = {"resource_version": metadata.get("resourceVersion"), "uid": metadata.get("uid")}
        refusal = None
        if metadata.get("deletionTimestamp"):
            refusal = f"{self._where(target)} is being deleted"
        return Observed(state=self.state_of(obj), labels=labels, snapshot=snapshot | self.extra_snapshot(obj),
                        refusal=refusal)  # fmt: skip

    def extra_snapshot(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        return {}


def _conditions(obj: Mapping[str, Any]) -> set[str]:
    status = obj.get("status") or {}
    return {str(c.get("type")) for c in status.get("conditions") or [] if str(c.get("status")) == "True"}


# -- scale to zero -------------------------------------------------------------------------------


class ScaleToZero(K8sAction):
    verb = "scale-to-zero"
    reversible = True
    native_dry_run = True
    valid_origin_states = frozenset({"RUNNING"})
    done_states = frozenset({"SCALED_TO_ZERO"})
    undone_states = frozenset({"RUNNING"})

    def state_of(self, obj: Mapping[str, Any]) -> str:
        replicas = (obj.get("spec") or {}).get("replicas", 1)
        return "RUNNING" if int(replicas or 0) > 0 else "SCALED_TO_ZERO"

    def extra_snapshot(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        return {"replicas": int((obj.get("spec") or {}).get("replicas", 1) or 0)}

    def _body(self, observed: Observed, replicas: int) -> dict[str, Any]:
        version = observed.snapshot.get("resource_version")
        return {"metadata": {"resourceVersion": version} if version else {}, "spec": {"replicas": replicas}}

    def dry_run(self, target: Target, observed: Observed) -> str:
        self.patch(target, self._body(observed, 0), dry_run=True, subresource="scale")
        replicas = observed.snapshot.get("replicas")
        return f"would scale {self._where(target)} from {replicas} replica(s) to 0 (the API server accepted a dry run)"

    def execute(self, target: Target, observed: Observed) -> Outcome:
        self.patch(target, self._body(observed, 0), subresource="scale")
        replicas = observed.snapshot.get("replicas")
        return Outcome(f"scaled {self._where(target)} from {replicas} replica(s) to 0", {"replicas_before": replicas})

    def undo(self, target: Target, snapshot: Mapping[str, Any]) -> Outcome:
        replicas = int(snapshot.get("replicas") or 0)
        if replicas <= 0:
            raise ActionError(f"{self._where(target)}: the journal holds no replica count to restore")
        now = self.describe(target)
        if now is None:
            raise ActionError(f"{self._where(target)} no longer exists; nothing to restore")
        if now.state != "SCALED_TO_ZERO":
            raise ActionError(f"{self._where(target)} was scaled to {now.snapshot.get('replicas')} since; left as is")
        self.patch(target, self._body(now, replicas), subresource="scale")
        return Outcome(f"scaled {self._where(target)} back to {replicas} replica(s)", {"replicas": replicas})


@register("k8s-deployment-scale-to-zero")
class DeploymentScaleToZero(ScaleToZero):
    """Scale a Deployment to zero replicas (its pods stop); undo restores the journaled replica count."""

    resource_type = "k8s-deployment"
    permissions = ("apps/deployments:get", "apps/deployments/scale:patch")
    undo_permissions = permissions


@register("k8s-statefulset-scale-to-zero")
class StatefulSetScaleToZero(ScaleToZero):
    """Scale a StatefulSet to zero replicas (volumes stay); undo restores the journaled replica count."""

    resource_type = "k8s-statefulset"
    permissions = ("apps/statefulsets:get", "apps/statefulsets/scale:patch")
    undo_permissions = permissions


# -- suspend -------------------------------------------------------------------------------------


class Suspend(K8sAction):
    verb = "suspend"
    reversible = True
    native_dry_run = True
    valid_origin_states = frozenset({"RUNNING"})
    done_states = frozenset({"SUSPENDED"})
    undone_states = frozenset({"RUNNING"})
    # Where the suspend flag lives under ``spec``.
    path: ClassVar[tuple[str, ...]] = ("suspend",)

    def suspended(self, obj: Mapping[str, Any]) -> bool:
        node: Any = obj.get("spec") or {}
        for key in self.path:
            node = node.get(key) if isinstance(node, Mapping) else None
        return bool(node)

    def finished(self, obj: Mapping[str, Any]) -> str | None:
        return None

    def state_of(self, obj: Mapping[str, Any]) -> str:
        return self.finished(obj) or ("SUSPENDED" if self.suspended(obj) else "RUNNING")

    def _body(self, value: bool, version: Any) -> dict[str, Any]:
        spec: dict[str, Any] = {self.path[-1]: value}
        for key in reversed(self.path[:-1]):
            spec = {key: spec}
        return {"metadata": {"resourceVersion": version} if version else {}, "spec": spec}

    def dry_run(self, target: Target, observed: Observed) -> str:
        self.patch(target, self._body(True, observed.snapshot.get("resource_version")), dry_run=True)
        return f"would suspend {self._where(target)} (the API server accepted a dry run)"

    def execute(self, target: Target, observed: Observed) -> Outcome:
        self.patch(target, self._body(True, observed.snapshot.get("resource_version")))
        return Outcome(f"suspended {self._where(target)}", {"suspended": True})

    def undo(self, target: Target, snapshot: Mapping[str, Any]) -> Outcome:
        now = self.describe(target)
        if now is None:
            raise ActionError(f"{self._where(target)} no longer exists; nothing to resume")
        self.patch(target, self._body(False, now.snapshot.get("resource_version")))
        return Outcome(f"resumed {self._where(target)}", {"suspended": False})


class _JobLike(Suspend):
    def finished(self, obj: Mapping[str, Any]) -> str | None:
        conditions = _conditions(obj)
        for name in ("Complete", "Succeeded", "Failed"):
            if name in conditions:
                return name.upper()
        return None


@register("k8s-job-suspend")
class JobSuspend(_JobLike):
    """Suspend a Job (``spec.suspend``): its running pods are deleted, it keeps its progress; undo resumes it."""

    resource_type = "k8s-job"
    permissions = ("batch/jobs:get", "batch/jobs:patch")
    undo_permissions = permissions


@register("k8s-cronjob-suspend")
class CronJobSuspend(Suspend):
    """Suspend a CronJob: no new runs are scheduled (running Jobs are separate targets); undo resumes it."""

    resource_type = "k8s-cronjob"
    permissions = ("batch/cronjobs:get", "batch/cronjobs:patch")
    undo_permissions = permissions


@register("k8s-rayjob-suspend")
class RayJobSuspend(Suspend):
    """Suspend a KubeRay RayJob (``spec.suspend``): its Ray cluster is deleted; undo resumes the job."""

    resource_type = "k8s-rayjob"
    permissions = ("ray.io/rayjobs:get", "ray.io/rayjobs:patch")
    undo_permissions = permissions

    def finished(self, obj: Mapping[str, Any]) -> str | None:
        status = str((obj.get("status") or {}).get("jobDeploymentStatus") or "")
        return status.upper() if status in ("Complete", "Failed") else None


@register("k8s-raycluster-suspend")
class RayClusterSuspend(Suspend):
    """Suspend a KubeRay RayCluster (``spec.suspend``, KubeRay ≥ 1.1): its pods are deleted; undo resumes it."""

    resource_type = "k8s-raycluster"
    permissions = ("ray.io/rayclusters:get", "ray.io/rayclusters:patch")
    undo_permissions = permissions


@register("k8s-pytorchjob-suspend")
class PyTorchJobSuspend(_JobLike):
    """Suspend a Kubeflow PyTorchJob (``spec.runPolicy.suspend``); undo resumes it."""

    resource_type = "k8s-pytorchjob"
    path = ("runPolicy", "suspend")
    permissions = ("kubeflow.org/pytorchjobs:get", "kubeflow.org/pytorchjobs:patch")
    undo_permissions = permissions


@register("k8s-tfjob-suspend")
class TFJobSuspend(_JobLike):
    """Suspend a Kubeflow TFJob (``spec.runPolicy.suspend``); undo resumes it."""

    resource_type = "k8s-tfjob"
    path = ("runPolicy", "suspend")
    permissions = ("kubeflow.org/tfjobs:get", "kubeflow.org/tfjobs:patch")
    undo_permissions = permissions


# -- delete a pod (irreversible) -----------------------------------------------------------------


class PodDeleteOptions(StrictModel):
    grace_period_seconds: int | None = Field(
        default=None, ge=0, le=3600, description="termination grace period (default: the pod's own)"
    )


@register("k8s-pod-delete")
class PodDelete(K8sAction):
    """Delete a pod. Irreversible (its controller may recreate it; a bare pod is gone): an explicit opt-in."""

    resource_type = "k8s-pod"
    verb = "delete"
    permissions = ("pods:get", "pods:delete")
    valid_origin_states = frozenset({"PENDING", "RUNNING"})
    done_states = frozenset({"TERMINATING"})
    reversible = False
    native_dry_run = True
    options_model = PodDeleteOptions

    def state_of(self, obj: Mapping[str, Any]) -> str:
        if (obj.get("metadata") or {}).get("deletionTimestamp"):
            return "TERMINATING"
        return str((obj.get("status") or {}).get("phase") or "UNKNOWN").upper()

    def _delete(self, target: Target, observed: Observed, *, dry_run: bool) -> Any:
        namespace, name = self._names(target)
        api = self._api(target)
        from kubernetes import client

        options = self.options
        assert isinstance(options, PodDeleteOptions)
        body = client.V1DeleteOptions(
            preconditions=client.V1Preconditions(
                resource_version=observed.snapshot.get("resource_version"), uid=observed.snapshot.get("uid")
            ),
            grace_period_seconds=options.grace_period_seconds,
            dry_run=["All"] if dry_run else None,
        )
        core = client.CoreV1Api(api)
        return self._call("delete", target, core.delete_namespaced_pod, name, namespace, body=body)

    def dry_run(self, target: Target, observed: Observed) -> str:
        self._delete(target, observed, dry_run=True)
        return f"would delete {self._where(target)} (irreversible; the API server accepted a dry run)"

    def execute(self, target: Target, observed: Observed) -> Outcome:
        self._delete(target, observed, dry_run=False)
        return Outcome(f"deleted {self._where(target)}", {"deleted": True})

    def took_effect(self, observed: Observed) -> bool:
        return observed.state in self.done_states


def rbac_rules(actions: tuple[type[K8sAction], ...] | None = None) -> set[str]:
    """Every ``<group>/<resource>:<verb>`` the Kubernetes actions (and their undo) need."""
    from spendwatch.killswitch.base import ACTIONS

    found: set[str] = set()
    for _, cls in ACTIONS.items():
        if issubclass(cls, K8sAction) and (actions is None or cls in actions):
            found |= set(cls.permissions) | set(cls.undo_permissions)
    return found


__all__ = ["K8sAction", "PodDelete", "ScaleToZero", "Suspend", "rbac_rules"]
