"""GCP actions with the real Google client libraries against the local fake Google API server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from spendwatch.killswitch.engine import KillSwitch, run_killswitch
from spendwatch.store import Store
from tests.doubles.google import GoogleApiServer, google_api  # noqa: F401  (fixture)
from tests.doubles.google_actions import GcpEstate
from tests.killswitch.conftest import gcp_role_permissions
from tests.killswitch.factories import incident, job, rule, settings


@pytest.fixture
def estate(google_api: GoogleApiServer, permission_audit: Any) -> Iterator[GcpEstate]:  # noqa: F811
    """The fake estate; afterwards, every Google permission the calls needed was declared and is in the role."""
    fake = GcpEstate(google_api)
    yield fake
    used = fake.permissions_used()
    declared = {p for cls in permission_audit.acted for p in (*cls.permissions, *cls.undo_permissions)}
    assert used <= declared, f"undeclared: {sorted(used - declared)}"
    assert used <= gcp_role_permissions(), (
        f"not in deploy/gcp/killswitch-role.yaml: {sorted(used - gcp_role_permissions())}"
    )


def _config(estate: GcpEstate, *rules: dict[str, Any], **extra: Any) -> Any:
    return settings(list(rules), gcp=estate.server.endpoint, **extra)


def _gcp_incident(resources: list[str], project: str = "proj-a", **kw: Any) -> Any:
    return incident(resources, provider="gcp", account=project, region="europe-west1", **kw)


def test_bigquery_cancel_running_job(estate: GcpEstate, store: Store, ks_clock: Any) -> None:
    estate.bigquery_jobs["bquxjob_big"] = {"state": "RUNNING", "user": "ana@x.io"}
    spec = rule(do="cancel", allow_irreversible=True, when={"job": {"platforms": ["bigquery"]}})
    record = job("bigquery", "proj-a:US.bquxjob_big", provider="gcp", account="proj-a", region="US", owner="ana@x.io")
    run = run_killswitch(_config(estate, spec), store, ks_clock, jobs=[record])
    [done] = run.executed
    assert done.target.resource_id == "bquxjob_big" and done.target.region == "US"
    assert estate.bigquery_jobs["bquxjob_big"]["state"] == "DONE"
    [call] = estate.server.calls("POST", "/bigquery/v2/projects/{project}/jobs/{job}/cancel")
    assert call.query["location"] == "US"


def test_bigquery_job_of_another_owner_now_is_skipped(estate: GcpEstate, store: Store, ks_clock: Any) -> None:
    estate.bigquery_jobs["j2"] = {"state": "RUNNING", "user": "bob@x.io"}
    spec = rule(do="cancel", allow_irreversible=True, when={"job": {}})
    run = run_killswitch(
        _config(estate, spec),
        store,
        ks_clock,
        jobs=[job("bigquery", "j2", provider="gcp", account="proj-a", region="US", owner="ana@x.io")],
    )
    assert not run.executed and "owner changed" in run.skipped[0].reason
    assert estate.bigquery_jobs["j2"]["state"] == "RUNNING"


def test_gce_stop_protected_by_label_and_undo(estate: GcpEstate, store: Store, ks_clock: Any) -> None:
    estate.instances["gpu-box"] = {"status": "RUNNING", "labels": {"owner": "ml"}}
    estate.instances["db"] = {"status": "RUNNING", "labels": {"spendwatch-protect": "true"}}
    paths = [f"projects/proj-a/zones/europe-west1-b/instances/{n}" for n in ("gpu-box", "db")]
    config = _config(estate, rule(do="stop"))
    run = run_killswitch(config, store, ks_clock, incidents=[_gcp_incident(paths)])
    [done] = run.executed
    assert estate.instances["gpu-box"]["status"] == "TERMINATED"
    assert estate.instances["db"]["status"] == "RUNNING"
    assert "spendwatch-protect=true" in run.skipped[0].reason
    KillSwitch(config, store, ks_clock).undo(done.id, "ml")
    assert estate.instances["gpu-box"]["status"] == "RUNNING"


def test_gce_suspend_and_resume(estate: GcpEstate, store: Store, ks_clock: Any) -> None:
    estate.instances["dev"] = {"status": "RUNNING"}
    config = _config(estate, rule(do="suspend"))
    run = run_killswitch(
        config, store, ks_clock, incidents=[_gcp_incident(["projects/proj-a/zones/europe-west1-b/instances/dev"])]
    )
    assert estate.instances["dev"]["status"] == "SUSPENDED"
    KillSwitch(config, store, ks_clock).undo(run.executed[0].id, "dev")
    assert estate.instances["dev"]["status"] == "RUNNING"


def test_dataproc_stop_and_start(estate: GcpEstate, store: Store, ks_clock: Any) -> None:
    estate.clusters["etl"] = {"state": "RUNNING"}
    config = _config(estate, rule(do="stop", when={"job": {"platforms": ["dataproc"]}}))
    record = job("dataproc", "job-77", provider="gcp", account="proj-a", region="europe-west1", resource_id="etl")
    run = run_killswitch(config, store, ks_clock, jobs=[record])
    [done] = run.executed
    assert done.target.resource_id == "projects/proj-a/regions/europe-west1/clusters/etl"
    assert estate.clusters["etl"]["state"] == "STOPPED"
    KillSwitch(config, store, ks_clock).undo(done.id, "data")
    assert estate.clusters["etl"]["state"] == "RUNNING"


def test_vertex_custom_job_cancel(estate: GcpEstate, store: Store, ks_clock: Any) -> None:
    estate.custom_jobs["123"] = {"state": "JOB_STATE_RUNNING", "labels": {"team": "ml"}}
    spec = rule(do="cancel", allow_irreversible=True, when={"job": {"platforms": ["vertex"]}})
    record = job("vertex", "123", provider="gcp", account="proj-a", region="us-central1")
    run = run_killswitch(_config(estate, spec), store, ks_clock, jobs=[record])
    assert len(run.executed) == 1
    assert estate.custom_jobs["123"]["state"] == "JOB_STATE_CANCELLING"


def test_gke_node_pool_to_zero_and_back_with_autoscaling(estate: GcpEstate, store: Store, ks_clock: Any) -> None:
    estate.node_pools["gpu-pool"] = {
        "size": 3,
        "migs": ["gke-mig-a"],
        "autoscaling": {"enabled": True, "minNodeCount": 1, "maxNodeCount": 6},
    }
    path = "projects/proj-a/locations/europe-west1/clusters/main/nodePools/gpu-pool"
    config = _config(estate, rule(do="scale-to-zero"))
    run = run_killswitch(config, store, ks_clock, incidents=[_gcp_incident([path])])
    [done] = run.executed
    assert estate.node_pools["gpu-pool"]["size"] == 0
    assert not estate.node_pools["gpu-pool"]["autoscaling"].get("enabled")
    assert done.prior_state["node_count"] == 3  # type: ignore[index]
    KillSwitch(config, store, ks_clock).undo(done.id, "ml")
    pool = estate.node_pools["gpu-pool"]
    assert pool["size"] == 3
    assert pool["autoscaling"] == {"enabled": True, "minNodeCount": 1, "maxNodeCount": 6}


def test_disable_billing_needs_opt_in_and_respects_project_labels(
    estate: GcpEstate, store: Store, ks_clock: Any
) -> None:
    estate.projects["sandbox"] = {"billing": "billingAccounts/0A-1", "labels": {}}
    estate.projects["shop"] = {"billing": "billingAccounts/0A-1", "labels": {"env": "prod"}}
    spec = rule(do="disable-billing", allow_irreversible=True, resource_types=["gcp-project"])
    config = _config(estate, spec, allow_disable_billing=True)
    run = run_killswitch(
        config,
        store,
        ks_clock,
        incidents=[
            _gcp_incident([], project="sandbox", incident_id=1),
            _gcp_incident([], project="shop", incident_id=2),
        ],
    )
    [done] = run.executed
    assert done.target.resource_id == "sandbox" and estate.projects["sandbox"]["billing"] == ""
    assert estate.projects["shop"]["billing"] == "billingAccounts/0A-1"
    assert "env=prod" in run.skipped[0].reason
    assert done.result["billing_account_name"] == "billingAccounts/0A-1"  # type: ignore[index]


def test_google_permission_error_fails_with_one_line(estate: GcpEstate, store: Store, ks_clock: Any) -> None:
    from tests.doubles.google import permission_denied

    estate.instances["locked"] = {"status": "RUNNING"}

    @estate.server.route("POST", "/compute/v1/projects/{project}/zones/{zone}/instances/{name}/stop")
    def deny(request: Any) -> Any:
        raise permission_denied("compute.instances.stop", request.path)

    run = run_killswitch(
        _config(estate, rule(do="stop")),
        store,
        ks_clock,
        incidents=[_gcp_incident(["projects/proj-a/zones/europe-west1-b/instances/locked"])],
    )
    [failed] = run.failed
    assert "compute.instances.stop" in (failed.error or "") and "lack this permission" in (failed.error or "")
    assert "\n" not in (failed.error or "")
