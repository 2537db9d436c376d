"""Google Cloud actions, through google-cloud-bigquery / -billing or Google's REST APIs directly.

=====================  ===================================================  =========================
action                 how                                                  why
=====================  ===================================================  =========================
bigquery-job-cancel    google-cloud-bigquery ``Client.cancel_job``          already a dependency
gce-instance-stop /    Compute Engine REST ``instances.get/stop/start/      the client library is
 -suspend               suspend/resume`` (``spendwatch.gcp_rest``)           ~65 MB for four calls
dataproc-cluster-stop  Dataproc REST ``clusters.get/stop/start``            as above
gke-node-pool-         GKE REST ``nodePools.get/setSize/setAutoscaling``,   as above; sizes read from
 scale-to-zero          ``operations.get`` + Compute ``instanceGroupManagers``  the node pool's MIGs
vertex-custom-job-     Vertex AI REST API ``customJobs.get/cancel``         google-cloud-aiplatform pulls
 cancel                                                                      ~100 MB for two calls
gcp-project-disable-   google-cloud-billing ``CloudBillingClient`` +        labels (env=prod …) come
 billing                Resource Manager v3 ``projects.get`` (REST)          from Resource Manager
=====================  ===================================================  =========================

REST calls go through an ``AuthorizedSession`` (injectable as the kill switch's ``gcp:<api>``
client) and raise the same ``google.api_core.exceptions`` the client libraries raise. Reads are
retried on 429/5xx; calls that change something are sent once. Long-running operations are started,
not awaited (their name is journaled), except the GKE autoscaling change that must finish before the
node pool can be resized.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

from spendwatch.errors import ActionError
from spendwatch.gcp_rest import GoogleRest, authorized_session, base_url, field, number, read_retry
from spendwatch.killswitch.base import Action, Observed, Outcome, Target, register

_GKE_OPERATION_TIMEOUT = 300.0
_MIG = re.compile(r"projects/(?P<p>[^/]+)/zones/(?P<z>[^/]+)/instanceGroupManagers/(?P<n>[^/]+)")
# A node pool's autoscaling counts: journal (snake_case) name → REST (camelCase) field.
_AUTOSCALING_COUNTS = {
    "min_node_count": "minNodeCount",
    "max_node_count": "maxNodeCount",
    "total_min_node_count": "totalMinNodeCount",
    "total_max_node_count": "totalMaxNodeCount",
}


def _google_error(exc: Exception, operation: str, target: Target) -> ActionError:
    code = getattr(exc, "code", None)
    message = getattr(exc, "message", None) or str(exc)
    hint = " (the credentials lack this permission)" if code in (403, 401) else ""
    return ActionError(f"{operation} on {target.describe()} failed: {code or ''} {message}{hint}".replace("  ", " "))


def _is_not_found(exc: Exception) -> bool:
    from google.api_core import exceptions

    return isinstance(exc, exceptions.NotFound)


def gcall(operation: str, target: Target, fn: Any, *args: Any, **kwargs: Any) -> Any:
    import requests
    from google.api_core import exceptions

    try:
        return fn(*args, **kwargs)
    except exceptions.GoogleAPIError as exc:
        raise _google_error(exc, operation, target) from exc
    except requests.RequestException as exc:  # no answer at all (REST calls): the same one-line error
        raise ActionError(f"{operation} on {target.describe()} failed: {exc}") from exc


def gdescribe(operation: str, target: Target, fn: Any, *args: Any, **kwargs: Any) -> Any | None:
    from google.api_core import exceptions

    try:
        return gcall(operation, target, fn, *args, **kwargs)
    except ActionError as exc:
        if isinstance(exc.__cause__, exceptions.NotFound):
            return None
        raise


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _parts(target: Target, pattern: str) -> dict[str, str]:
    match = re.fullmatch(pattern, target.resource_id)
    if match is None:
        raise ActionError(f"{target.resource_type} id {target.resource_id!r} does not look like {pattern}")
    return match.groupdict()


class GcpAction(Action):
    provider = "gcp"

    def _rest(self, api: str, region: str = "") -> GoogleRest:
        """The REST API ``api`` (at ``region``'s endpoint for regional APIs), one per action context."""

        def build(credentials: Any, options: dict[str, Any]) -> GoogleRest:
            base = base_url(self.context.settings.gcp, api, region)
            return GoogleRest(authorized_session(credentials), base, retry=read_retry())

        return self.context.gcp_client(f"{api}.{region}" if region else api, build)  # type: ignore[no-any-return]


# -- BigQuery ----------------------------------------------------------------------------------


@register("bigquery-job-cancel")
class BigQueryCancel(GcpAction):
    """Cancel a running BigQuery job; bytes already processed are still billed."""

    resource_type = "bigquery-job"
    verb = "cancel"
    permissions = ("bigquery.jobs.get", "bigquery.jobs.update")
    valid_origin_states = frozenset({"PENDING", "RUNNING"})
    done_states = frozenset({"DONE"})
    reversible = False

    def _client(self, target: Target) -> Any:
        def build(credentials: Any, options: dict[str, Any]) -> Any:
            from google.cloud import bigquery

            return bigquery.Client(
                project=target.account or self.context.settings.gcp.project,
                credentials=credentials,
                client_options=options or None,
            )

        return self.context.gcp_client("bigquery", build)

    def describe(self, target: Target) -> Observed | None:
        client = self._client(target)
        job = gdescribe(
            "jobs.get", target, client.get_job, target.resource_id, project=target.account, location=target.region
        )
        if job is None:
            return None
        return Observed(state=str(job.state), labels=dict(job.labels or {}), owner=job.user_email)

    def execute(self, target: Target, observed: Observed) -> Outcome:
        client = self._client(target)
        job = gcall(
            "jobs.cancel", target, client.cancel_job, target.resource_id, project=target.account, location=target.region
        )
        return Outcome(f"cancelled BigQuery job {target.resource_id}", {"state": str(job.state)})


# -- Compute Engine ----------------------------------------------------------------------------

_GCE = r"projects/(?P<project>[^/]+)/zones/(?P<zone>[^/]+)/instances/(?P<instance>[^/]+)"


class GceAction(GcpAction):
    resource_type = "gce-instance"
    reversible = True
    undone_states = frozenset({"PROVISIONING", "STAGING", "RUNNING"})
    method = ""
    undo_method = ""

    @staticmethod
    def _path(ids: dict[str, str], verb: str = "") -> str:
        path = f"compute/v1/projects/{ids['project']}/zones/{ids['zone']}/instances/{ids['instance']}"
        return f"{path}/{verb}" if verb else path

    def describe(self, target: Target) -> Observed | None:
        ids = _parts(target, _GCE)
        instance = gdescribe("instances.get", target, self._rest("compute").get, self._path(ids))
        if instance is None:
            return None
        return Observed(state=str(instance.get("status") or ""), labels=dict(instance.get("labels") or {}))

    def _start(self, method: str, target: Target) -> Outcome:
        ids = _parts(target, _GCE)
        operation = gcall(f"instances.{method}", target, self._rest("compute").post, self._path(ids, method))
        name = operation.get("name")
        return Outcome(f"{method} requested for instance {ids['instance']} (operation {name})", {"operation": name})

    def execute(self, target: Target, observed: Observed) -> Outcome:
        return self._start(self.method, target)

    def undo(self, target: Target, snapshot: Mapping[str, Any]) -> Outcome:
        return self._start(self.undo_method, target)


@register("gce-instance-stop")
class GceStop(GceAction):
    """Stop a Compute Engine instance (disks stay, vCPU/RAM billing stops); undo starts it."""

    verb = "stop"
    method, undo_method = "stop", "start"
    permissions = ("compute.instances.get", "compute.instances.stop")
    undo_permissions = ("compute.instances.get", "compute.instances.start")
    valid_origin_states = frozenset({"PROVISIONING", "STAGING", "RUNNING"})
    done_states = frozenset({"STOPPING", "STOPPED", "TERMINATED"})


@register("gce-instance-suspend")
class GceSuspend(GceAction):
    """Suspend a Compute Engine instance (memory saved to disk); undo resumes it."""

    verb = "suspend"
    method, undo_method = "suspend", "resume"
    permissions = ("compute.instances.get", "compute.instances.suspend")
    undo_permissions = ("compute.instances.get", "compute.instances.resume")
    valid_origin_states = frozenset({"RUNNING"})
    done_states = frozenset({"SUSPENDING", "SUSPENDED"})


# -- Dataproc ----------------------------------------------------------------------------------

_DATAPROC = r"projects/(?P<project_id>[^/]+)/regions/(?P<region>[^/]+)/clusters/(?P<cluster_name>[^/]+)"


@register("dataproc-cluster-stop")
class DataprocStop(GcpAction):
    """Stop a Dataproc cluster (its VMs stop, the cluster stays); undo starts it."""

    resource_type = "dataproc-cluster"
    verb = "stop"
    permissions = ("dataproc.clusters.get", "dataproc.clusters.stop")
    undo_permissions = ("dataproc.clusters.get", "dataproc.clusters.start")
    valid_origin_states = frozenset({"RUNNING"})
    done_states = frozenset({"STOPPING", "STOPPED"})
    undone_states = frozenset({"STARTING", "RUNNING"})
    reversible = True

    @staticmethod
    def _path(ids: dict[str, str]) -> str:
        return f"v1/projects/{ids['project_id']}/regions/{ids['region']}/clusters/{ids['cluster_name']}"

    def describe(self, target: Target) -> Observed | None:
        ids = _parts(target, _DATAPROC)
        cluster = gdescribe("clusters.get", target, self._rest("dataproc", ids["region"]).get, self._path(ids))
        if cluster is None:
            return None
        state = field(cluster, "status", "state") or "UNKNOWN"
        return Observed(state=str(state), labels=dict(cluster.get("labels") or {}))

    def _lro(self, method: str, target: Target) -> Outcome:
        ids = _parts(target, _DATAPROC)
        rest = self._rest("dataproc", ids["region"])
        operation = gcall(f"clusters.{method}", target, rest.post, f"{self._path(ids)}:{method}")
        name = operation.get("name")
        return Outcome(
            f"{method} requested for Dataproc cluster {ids['cluster_name']} (operation {name})", {"operation": name}
        )

    def execute(self, target: Target, observed: Observed) -> Outcome:
        return self._lro("stop", target)

    def undo(self, target: Target, snapshot: Mapping[str, Any]) -> Outcome:
        return self._lro("start", target)


# -- Vertex AI (REST) --------------------------------------------------------------------------

_VERTEX = r"projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/customJobs/(?P<job>[^/]+)"


@register("vertex-custom-job-cancel")
class VertexCancel(GcpAction):
    """Cancel a Vertex AI custom (training) job through the REST API."""

    resource_type = "vertex-custom-job"
    verb = "cancel"
    permissions = ("aiplatform.customJobs.get", "aiplatform.customJobs.cancel")
    valid_origin_states = frozenset({"JOB_STATE_QUEUED", "JOB_STATE_PENDING", "JOB_STATE_RUNNING"})
    done_states = frozenset({"JOB_STATE_CANCELLING", "JOB_STATE_CANCELLED"})
    reversible = False

    def _session(self) -> Any:
        def build(credentials: Any, options: dict[str, Any]) -> Any:
            from google.auth.transport.requests import AuthorizedSession

            return AuthorizedSession(credentials)

        return self.context.gcp_client("aiplatform", build)

    def _url(self, target: Target, suffix: str = "") -> str:
        location = _parts(target, _VERTEX)["location"]
        base = self.context.settings.gcp.endpoints.get("aiplatform") or f"https://{location}-aiplatform.googleapis.com"
        return f"{base.rstrip('/')}/v1/{target.resource_id}{suffix}"

    def _request(self, method: str, target: Target, suffix: str = "") -> Any:
        import requests

        try:
            response = self._session().request(
                method, self._url(target, suffix), json={} if method == "POST" else None, timeout=60
            )
        except requests.RequestException as exc:
            raise ActionError(f"customJobs{suffix or '.get'} on {target.describe()} failed: {exc}") from exc
        return response

    def describe(self, target: Target) -> Observed | None:
        response = self._request("GET", target)
        if response.status_code == 404:
            return None
        body = self._json(response, "customJobs.get", target)
        return Observed(state=str(body.get("state", "JOB_STATE_UNSPECIFIED")), labels=dict(body.get("labels") or {}))

    def execute(self, target: Target, observed: Observed) -> Outcome:
        self._json(self._request("POST", target, ":cancel"), "customJobs.cancel", target)
        return Outcome(f"cancelled Vertex AI custom job {target.resource_id}", {"state": "JOB_STATE_CANCELLING"})

    @staticmethod
    def _json(response: Any, operation: str, target: Target) -> dict[str, Any]:
        try:
            body = response.json() if response.content else {}
        except ValueError:
            body = {}
        if response.status_code >= 400:
            message = (body.get("error") or {}).get("message") if isinstance(body, dict) else None
            hint = " (the credentials lack this permission)" if response.status_code in (401, 403) else ""
            raise ActionError(
                f"{operation} on {target.describe()} failed: HTTP {response.status_code} {message or ''}{hint}".strip()
            )
        return body if isinstance(body, dict) else {}


# -- GKE ---------------------------------------------------------------------------------------


@register("gke-node-pool-scale-to-zero")
class GkeScaleToZero(GcpAction):
    """Resize a GKE node pool to 0 nodes (autoscaling off first); undo restores size and autoscaling."""

    resource_type = "gke-node-pool"
    verb = "scale-to-zero"
    permissions = (
        "container.clusters.get",
        "container.clusters.update",
        "container.operations.get",
        "compute.instanceGroupManagers.get",
    )
    undo_permissions = permissions
    valid_origin_states = frozenset({"active"})
    done_states = frozenset({"scaled-to-zero"})
    undone_states = frozenset({"active"})
    reversible = True

    def _path(self, target: Target, suffix: str = "") -> str:
        return f"v1/{target.resource_id}{suffix}"

    def describe(self, target: Target) -> Observed | None:
        pool = gdescribe("nodePools.get", target, self._rest("container").get, self._path(target))
        if pool is None:
            return None
        sizes = []
        for url in pool.get("instanceGroupUrls") or []:
            match = _MIG.search(str(url))
            if match is None:
                continue
            mig = gcall(
                "instanceGroupManagers.get",
                target,
                self._rest("compute").get,
                f"compute/v1/projects/{match['p']}/zones/{match['z']}/instanceGroupManagers/{match['n']}",
            )
            sizes.append(number(mig.get("targetSize")))
        per_zone = max(sizes) if sizes else 0
        autoscaling = pool.get("autoscaling") or {}
        # snake_case keys, as journaled since the first release (undo reads older journals too)
        counts = {name: number(autoscaling.get(key)) for name, key in _AUTOSCALING_COUNTS.items()}
        snapshot = {"node_count": per_zone, "autoscaling": {"enabled": bool(autoscaling.get("enabled")), **counts}}
        status = str(pool.get("status") or "STATUS_UNSPECIFIED")
        if status != "RUNNING":
            state = status.lower()
        else:
            state = "active" if per_zone > 0 or autoscaling.get("enabled") else "scaled-to-zero"
        config = pool.get("config") or {}
        labels = {**dict(config.get("resourceLabels") or {}), **dict(config.get("labels") or {})}
        return Observed(state=state, labels=labels, snapshot=snapshot)

    def _wait(self, operation: dict[str, Any], target: Target) -> None:
        deadline = time.monotonic() + _GKE_OPERATION_TIMEOUT
        name = str(operation.get("name") or "")
        path = f"v1/{target.resource_id.split('/clusters/')[0]}/operations/{name}"
        while operation.get("status") != "DONE":
            if time.monotonic() > deadline:
                raise ActionError(f"GKE operation {name} on {target.describe()} did not finish in time")
            time.sleep(2.0)  # GKE's REST API has no wait call: poll the operation
            operation = gcall("operations.get", target, self._rest("container").get, path)
        message = field(operation, "error", "message")
        if message:
            raise ActionError(f"GKE operation {name} on {target.describe()} failed: {message}")

    def _set_size(self, target: Target, count: int) -> dict[str, Any]:
        body = {"nodeCount": count}
        result: dict[str, Any] = gcall(
            "nodePools.setSize", target, self._rest("container").post, self._path(target, ":setSize"), body
        )
        return result

    def _set_autoscaling(self, target: Target, settings: Mapping[str, Any]) -> dict[str, Any]:
        body = {"autoscaling": {_camel(k): v for k, v in settings.items()}}
        result: dict[str, Any] = gcall(
            "nodePools.setAutoscaling", target, self._rest("container").post, self._path(target, ":setAutoscaling"),
            body,
        )  # fmt: skip
        return result

    def execute(self, target: Target, observed: Observed) -> Outcome:
        before = dict(observed.snapshot)
        if before.get("autoscaling", {}).get("enabled"):
            self._wait(self._set_autoscaling(target, {"enabled": False}), target)
        op = self._set_size(target, 0)
        return Outcome(
            f"resized node pool {target.resource_id.rsplit('/', 1)[-1]} to 0 (was {before.get('node_count')} per zone)",
            {"operation": op.get("name"), **before},
        )

    def undo(self, target: Target, snapshot: Mapping[str, Any]) -> Outcome:
        count = int(snapshot.get("node_count") or 0)
        op = self._set_size(target, count)
        autoscaling = dict(snapshot.get("autoscaling") or {})
        if autoscaling.get("enabled"):
            self._wait(op, target)
            self._set_autoscaling(target, {k: v for k, v in autoscaling.items() if v or k == "enabled"})
        return Outcome(
            f"restored node pool {target.resource_id.rsplit('/', 1)[-1]} to {count} per zone"
            + (" with autoscaling" if autoscaling.get("enabled") else ""),
            dict(snapshot),
        )

    def is_undone(self, observed: Observed, snapshot: Mapping[str, Any]) -> bool:
        return dict(observed.snapshot) == dict(snapshot)


# -- Billing -----------------------------------------------------------------------------------


@register("gcp-project-disable-billing")
class DisableBilling(GcpAction):
    """Detach a project from its billing account. Google warns resources may be deleted: opt-in only."""

    resource_type = "gcp-project"
    verb = "disable-billing"
    permissions = (
        "resourcemanager.projects.get",
        "resourcemanager.projects.deleteBillingAssignment",
        "billing.resourceAssociations.delete",
    )
    valid_origin_states = frozenset({"billing-enabled"})
    done_states = frozenset({"billing-disabled"})
    reversible = False

    def _billing(self) -> Any:
        def build(credentials: Any, options: dict[str, Any]) -> Any:
            from google.cloud import billing_v1

            return billing_v1.CloudBillingClient(
                credentials=credentials, client_options=options or None, transport="rest"
            )

        return self.context.gcp_client("cloudbilling", build)

    def _project_labels(self, target: Target) -> dict[str, str]:
        def build(credentials: Any, options: dict[str, Any]) -> Any:
            from google.auth.transport.requests import AuthorizedSession

            return AuthorizedSession(credentials)

        session = self.context.gcp_client("cloudresourcemanager", build)
        base = (
            self.context.settings.gcp.endpoints.get("cloudresourcemanager")
            or "https://cloudresourcemanager.googleapis.com"
        )
        response = session.get(f"{base.rstrip('/')}/v3/projects/{target.resource_id}", timeout=60)
        if response.status_code >= 400:
            raise ActionError(
                f"projects.get on {target.describe()} failed: HTTP {response.status_code} "
                "(labels are needed to check protection)"
            )
        return dict((response.json() or {}).get("labels") or {})

    def describe(self, target: Target) -> Observed | None:
        info = gdescribe(
            "projects.getBillingInfo",
            target,
            self._billing().get_project_billing_info,
            name=f"projects/{target.resource_id}",
        )
        if info is None:
            return None
        state = "billing-enabled" if info.billing_enabled else "billing-disabled"
        return Observed(
            state=state,
            labels=self._project_labels(target),
            snapshot={"billing_account_name": info.billing_account_name},
        )

    def execute(self, target: Target, observed: Observed) -> Outcome:
        gcall(
            "projects.updateBillingInfo",
            target,
            self._billing().update_project_billing_info,
            name=f"projects/{target.resource_id}",
            project_billing_info={"billing_account_name": ""},
        )
        account = observed.snapshot.get("billing_account_name")
        return Outcome(
            f"disabled billing on project {target.resource_id} (was {account}; re-link it to undo)",
            {"billing_account_name": account},
        )


GCP_ACTIONS: tuple[type[Action], ...] = (
    BigQueryCancel,
    GceStop,
    GceSuspend,
    DataprocStop,
    VertexCancel,
    GkeScaleToZero,
    DisableBilling,
)
