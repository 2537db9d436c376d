"""Kill-switch routes on the fake Google API server: a small stateful GCP estate.

``GcpEstate(server)`` registers the REST routes that the real clients call for BigQuery jobs, Compute
Engine instances and managed instance groups, Dataproc clusters, Vertex AI custom jobs, GKE node pools,
Cloud Billing and Resource Manager, answering from (and mutating) plain dicts. ``PERMISSIONS`` maps
each route to the IAM permission Google checks for it, so tests can prove every call an action makes
is covered by what it declares and by ``deploy/gcp/killswitch-role.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.doubles.google import ApiError, ApiRequest, GoogleApiServer

PERMISSIONS: dict[tuple[str, str], str] = {
    ("GET", "/bigquery/v2/projects/{project}/jobs/{job}"): "bigquery.jobs.get",
    ("POST", "/bigquery/v2/projects/{project}/jobs/{job}/cancel"): "bigquery.jobs.update",
    ("GET", "/compute/v1/projects/{project}/zones/{zone}/instances/{name}"): "compute.instances.get",
    ("POST", "/compute/v1/projects/{project}/zones/{zone}/instances/{name}/stop"): "compute.instances.stop",
    ("POST", "/compute/v1/projects/{project}/zones/{zone}/instances/{name}/start"): "compute.instances.start",
    ("POST", "/compute/v1/projects/{project}/zones/{zone}/instances/{name}/suspend"): "compute.instances.suspend",
    ("POST", "/compute/v1/projects/{project}/zones/{zone}/instances/{name}/resume"): "compute.instances.resume",
    (
        "GET",
        "/compute/v1/projects/{project}/zones/{zone}/instanceGroupManagers/{name}",
    ): "compute.instanceGroupManagers.get",
    ("GET", "/v1/projects/{project}/regions/{region}/clusters/{name}"): "dataproc.clusters.get",
    ("POST", "/v1/projects/{project}/regions/{region}/clusters/{name}:stop"): "dataproc.clusters.stop",
    ("POST", "/v1/projects/{project}/regions/{region}/clusters/{name}:start"): "dataproc.clusters.start",
    ("GET", "/v1/projects/{project}/locations/{location}/customJobs/{job}"): "aiplatform.customJobs.get",
    ("POST", "/v1/projects/{project}/locations/{location}/customJobs/{job}:cancel"): "aiplatform.customJobs.cancel",
    (
        "GET",
        "/v1/projects/{project}/locations/{location}/clusters/{cluster}/nodePools/{pool}",
    ): "container.clusters.get",
    (
        "POST",
        "/v1/projects/{project}/locations/{location}/clusters/{cluster}/nodePools/{pool}:setSize",
    ): "container.clusters.update",
    (
        "POST",
        "/v1/projects/{project}/locations/{location}/clusters/{cluster}/nodePools/{pool}:setAutoscaling",
    ): "container.clusters.update",
    ("GET", "/v1/projects/{project}/locations/{location}/operations/{op}"): "container.operations.get",
    ("GET", "/v1/projects/{project}/billingInfo"): "resourcemanager.projects.get",
    ("PUT", "/v1/projects/{project}/billingInfo"): "resourcemanager.projects.deleteBillingAssignment",
    ("GET", "/v3/projects/{project}"): "resourcemanager.projects.get",
}


@dataclass
class GcpEstate:
    """The fake estate; tests add resources to the dicts and read them back after acting."""

    server: GoogleApiServer
    bigquery_jobs: dict[str, dict[str, Any]] = field(default_factory=dict)  # job id → {state, labels, user}
    instances: dict[str, dict[str, Any]] = field(default_factory=dict)  # name → {status, labels}
    clusters: dict[str, dict[str, Any]] = field(default_factory=dict)  # dataproc name → {state, labels}
    custom_jobs: dict[str, dict[str, Any]] = field(default_factory=dict)  # id → {state, labels}
    node_pools: dict[str, dict[str, Any]] = field(default_factory=dict)  # pool → {size, autoscaling, labels}
    projects: dict[str, dict[str, Any]] = field(default_factory=dict)  # project → {billing, labels}

    def __post_init__(self) -> None:
        for (method, pattern), _ in PERMISSIONS.items():
            handler = getattr(self, "_" + _handler_name(method, pattern))
            self.server.add_route(method, pattern, handler)

    def permissions_used(self) -> set[str]:
        used = set()
        for (method, pattern), permission in PERMISSIONS.items():
            if self.server.calls(method, pattern):
                used.add(permission)
        return used

    # -- BigQuery ---------------------------------------------------------------------------------

    def _bq(self, request: ApiRequest) -> dict[str, Any]:
        job = self._get(self.bigquery_jobs, request.params["job"])
        return {
            "jobReference": {
                "projectId": request.params["project"],
                "jobId": request.params["job"],
                "location": request.query.get("location", "US"),
            },
            "status": {"state": job["state"]},
            "configuration": {"labels": job.get("labels", {}), "query": {"query": "SELECT 1"}},
            "user_email": job.get("user"),
        }

    def _get_bigquery_job(self, request: ApiRequest) -> dict[str, Any]:
        return self._bq(request)

    def _post_bigquery_cancel(self, request: ApiRequest) -> dict[str, Any]:
        self._get(self.bigquery_jobs, request.params["job"])["state"] = "DONE"
        return {"kind": "bigquery#jobCancelResponse", "job": self._bq(request)}

    # -- Compute ----------------------------------------------------------------------------------

    def _get_instance(self, request: ApiRequest) -> dict[str, Any]:
        vm = self._get(self.instances, request.params["name"])
        return {"name": request.params["name"], "status": vm["status"], "labels": vm.get("labels", {})}

    def _operation(self, name: str) -> dict[str, Any]:
        return {"kind": "compute#operation", "name": f"operation-{name}", "status": "DONE"}

    def _instance_to(self, request: ApiRequest, status: str) -> dict[str, Any]:
        self._get(self.instances, request.params["name"])["status"] = status
        return self._operation(request.params["name"])

    def _post_instance_stop(self, request: ApiRequest) -> dict[str, Any]:
        return self._instance_to(request, "TERMINATED")

    def _post_instance_start(self, request: ApiRequest) -> dict[str, Any]:
        return self._instance_to(request, "RUNNING")

    def _post_instance_suspend(self, request: ApiRequest) -> dict[str, Any]:
        return self._instance_to(request, "SUSPENDED")

    def _post_instance_resume(self, request: ApiRequest) -> dict[str, Any]:
        return self._instance_to(request, "RUNNING")

    def _get_mig(self, request: ApiRequest) -> dict[str, Any]:
        name = request.params["name"]
        pool = next((p for p in self.node_pools.values() if name in p.get("migs", [])), None)
        if pool is None:
            raise ApiError(404, f"instance group manager {name} not found")
        return {"name": name, "targetSize": pool["size"]}

    # -- Dataproc ---------------------------------------------------------------------------------

    def _get_dataproc(self, request: ApiRequest) -> dict[str, Any]:
        cluster = self._get(self.clusters, request.params["name"])
        return {
            "clusterName": request.params["name"],
            "projectId": request.params["project"],
            "status": {"state": cluster["state"]},
            "labels": cluster.get("labels", {}),
        }

    def _dataproc_to(self, request: ApiRequest, state: str) -> dict[str, Any]:
        self._get(self.clusters, request.params["name"])["state"] = state
        return {
            "name": f"projects/{request.params['project']}/regions/{request.params['region']}/operations/op-1",
            "done": False,
        }

    def _post_dataproc_stop(self, request: ApiRequest) -> dict[str, Any]:
        return self._dataproc_to(request, "STOPPED")

    def _post_dataproc_start(self, request: ApiRequest) -> dict[str, Any]:
        return self._dataproc_to(request, "RUNNING")

    # -- Vertex AI --------------------------------------------------------------------------------

    def _get_custom_job(self, request: ApiRequest) -> dict[str, Any]:
        job = self._get(self.custom_jobs, request.params["job"])
        return {"name": request.path.removeprefix("/v1/"), "state": job["state"], "labels": job.get("labels", {})}

    def _post_custom_job_cancel(self, request: ApiRequest) -> dict[str, Any]:
        self._get(self.custom_jobs, request.params["job"])["state"] = "JOB_STATE_CANCELLING"
        return {}

    # -- GKE --------------------------------------------------------------------------------------

    def _get_node_pool(self, request: ApiRequest) -> dict[str, Any]:
        pool = self._get(self.node_pools, request.params["pool"])
        project, zone = request.params["project"], request.params["location"]
        return {
            "name": request.params["pool"],
            "status": "RUNNING",
            "instanceGroupUrls": [
                f"https://www.googleapis.com/compute/v1/projects/{project}/zones/{zone}-b/instanceGroupManagers/{m}"
                for m in pool.get("migs", [])
            ],
            "autoscaling": pool.get("autoscaling", {}),
            "config": {"labels": pool.get("labels", {}), "resourceLabels": {}},
        }

    def _gke_op(self, request: ApiRequest) -> dict[str, Any]:
        return {"name": "operation-1", "status": "DONE", "operationType": "SET_NODE_POOL_SIZE"}

    def _post_node_pool_size(self, request: ApiRequest) -> dict[str, Any]:
        pool = self._get(self.node_pools, request.params["pool"])
        if pool.get("autoscaling", {}).get("enabled"):
            raise ApiError(400, "cannot resize a node pool with autoscaling enabled", reason="badRequest")
        pool["size"] = int((request.json or {}).get("nodeCount", 0))
        return self._gke_op(request)

    def _post_node_pool_autoscaling(self, request: ApiRequest) -> dict[str, Any]:
        pool = self._get(self.node_pools, request.params["pool"])
        pool["autoscaling"] = dict((request.json or {}).get("autoscaling") or {})
        return self._gke_op(request)

    def _get_gke_operation(self, request: ApiRequest) -> dict[str, Any]:
        return self._gke_op(request)

    # -- Billing and Resource Manager ---------------------------------------------------------------

    def _get_billing(self, request: ApiRequest) -> dict[str, Any]:
        project = self._get(self.projects, request.params["project"])
        account = project.get("billing", "")
        return {
            "name": f"projects/{request.params['project']}/billingInfo",
            "projectId": request.params["project"],
            "billingAccountName": account,
            "billingEnabled": bool(account),
        }

    def _put_billing(self, request: ApiRequest) -> dict[str, Any]:
        self._get(self.projects, request.params["project"])["billing"] = (request.json or {}).get(
            "billingAccountName", ""
        )
        return self._get_billing(request)

    def _get_project(self, request: ApiRequest) -> dict[str, Any]:
        project = self._get(self.projects, request.params["project"])
        return {"name": f"projects/{request.params['project']}", "labels": project.get("labels", {})}

    @staticmethod
    def _get(table: dict[str, dict[str, Any]], key: str) -> dict[str, Any]:
        if key not in table:
            raise ApiError(404, f"{key} not found")
        return table[key]


_HANDLERS = {
    ("GET", "jobs/{job}"): "get_bigquery_job",
    ("POST", "jobs/{job}/cancel"): "post_bigquery_cancel",
    ("GET", "instances/{name}"): "get_instance",
    ("POST", "/stop"): "post_instance_stop",
    ("POST", "/start"): "post_instance_start",
    ("POST", "/suspend"): "post_instance_suspend",
    ("POST", "/resume"): "post_instance_resume",
    ("GET", "instanceGroupManagers/{name}"): "get_mig",
    ("GET", "regions/{region}/clusters/{name}"): "get_dataproc",
    ("POST", ":stop"): "post_dataproc_stop",
    ("POST", ":start"): "post_dataproc_start",
    ("GET", "customJobs/{job}"): "get_custom_job",
    ("POST", ":cancel"): "post_custom_job_cancel",
    ("GET", "nodePools/{pool}"): "get_node_pool",
    ("POST", ":setSize"): "post_node_pool_size",
    ("POST", ":setAutoscaling"): "post_node_pool_autoscaling",
    ("GET", "operations/{op}"): "get_gke_operation",
    ("GET", "billingInfo"): "get_billing",
    ("PUT", "billingInfo"): "put_billing",
    ("GET", "/v3/projects/{project}"): "get_project",
}


def _handler_name(method: str, pattern: str) -> str:
    for (verb, suffix), name in _HANDLERS.items():
        if verb == method and pattern.endswith(suffix):
            return name
    raise KeyError(f"no handler for {method} {pattern}")
