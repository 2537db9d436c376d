"""Kubernetes kill-switch actions: the real ``kubernetes`` client against the API server double.

Each action goes through the same engine as every other (plan → journal → re-read → protection →
act → journal), with the double allowing exactly what deploy/kubernetes/rbac-killswitch.yaml grants.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("kubernetes", reason="pip install -e '.[dev]' brings the kubernetes extra")

from spendwatch.errors import ActionError
from spendwatch.killswitch.base import ActionContext, Target
from spendwatch.killswitch.engine import KillSwitch
from spendwatch.killswitch.journal import list_actions
from spendwatch.killswitch.k8s import JobSuspend, rbac_rules
from spendwatch.killswitch.rules import incident_matches
from spendwatch.store.records import JobLink
from tests.doubles.clock import FixedClock
from tests.doubles.kubernetes_api import (
    KubernetesApi,
    cronjob,
    deployment,
    job,
    pod,
    pytorch_job,
    ray_cluster,
    ray_job,
    statefulset,
)
from tests.killswitch.conftest import k8s_rbac_rules
from tests.killswitch.factories import ACCOUNT, NOW, incident, new_store, rule, settings

CLUSTER = "eks-ml"
EKS_ACCOUNT = "678901234567"
EKS_REGION = "us-west-2"
# Where the cluster runs: the scope an incident on EKS spend (aws / 678901234567) lets the kill switch act in.
CLUSTERS = {"clusters": {CLUSTER: {"provider": "aws", "account": EKS_ACCOUNT, "region": EKS_REGION, "auth": "none"}}}


def _link(uri: str, owner: str = "fatima.zahra@example.com") -> JobLink:
    # Billed in the incident's own account: a link outside it is refused (killswitch.scope).
    return JobLink(
        platform="kubernetes", job_id=uri, provider="aws", sub_account_id=ACCOUNT, user=owner,
        name=uri.rsplit("/", 1)[-1], state="RUNNING", cost=900.0, cost_method="requests x node price",
        start_time=NOW, end_time=None, resource_id=uri,
    )  # fmt: skip


def _incident(**extra: Any) -> Any:
    """An incident on the EKS cluster's account (as attribution links its workloads)."""
    return incident(account=EKS_ACCOUNT, region=EKS_REGION, **extra)


def _engine(tmp_path: Path, api: KubernetesApi, rules: list[dict[str, Any]], **extra: Any) -> KillSwitch:
    config = settings(rules, kubernetes=CLUSTERS, **extra)
    store = new_store(tmp_path, FixedClock(NOW))
    return KillSwitch(config, store, FixedClock(NOW), clients={f"k8s:{CLUSTER}": api.client()})


CASES = [
    ("k8s-job", "suspend", job("research", "llm-pretrain", gpus=8), ("batch", "jobs"), ("spec", "suspend"), False),
    ("k8s-cronjob", "suspend", cronjob("research", "nightly-eval"), ("batch", "cronjobs"), ("spec", "suspend"), False),
    ("k8s-rayjob", "suspend", ray_job("research", "ray-sweep"), ("ray.io", "rayjobs"), ("spec", "suspend"), False),
    ("k8s-raycluster", "suspend", ray_cluster("research", "ray-dev"), ("ray.io", "rayclusters"), ("spec", "suspend"),
     None),
    ("k8s-pytorchjob", "suspend", pytorch_job("research", "ddp-run"), ("kubeflow.org", "pytorchjobs"),
     ("spec", "runPolicy", "suspend"), False),
    ("k8s-tfjob", "suspend", pytorch_job("research", "tf-run", kind="TFJob"), ("kubeflow.org", "tfjobs"),
     ("spec", "runPolicy", "suspend"), False),
    ("k8s-deployment", "scale-to-zero", deployment("serving", "notebook-gpu", replicas=3), ("apps", "deployments"),
     ("spec", "replicas"), 3),
    ("k8s-statefulset", "scale-to-zero", statefulset("serving", "vector-db", replicas=2), ("apps", "statefulsets"),
     ("spec", "replicas"), 2),
]  # fmt: skip


def _at(obj: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        obj = obj.get(key) if isinstance(obj, dict) else None  # type: ignore[assignment]
    return obj


@pytest.mark.parametrize(("rtype", "verb", "obj", "where", "path", "before"), CASES, ids=[c[0] for c in CASES])
def test_enforce_then_undo_round_trips_with_only_the_shipped_rbac(
    kube_api: KubernetesApi, tmp_path: Path, rtype: str, verb: str, obj: dict[str, Any],
    where: tuple[str, str], path: tuple[str, ...], before: Any,
) -> None:  # fmt: skip
    kube_api.add(obj)
    kube_api.allow = k8s_rbac_rules("spendwatch-killswitch")
    namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    uri = f"k8s://{CLUSTER}/{namespace}/{obj['kind']}/{name}"
    engine = _engine(tmp_path, kube_api, [rule(do=verb, resource_types=[rtype])])

    run = engine.run(incidents=[_incident(jobs=(_link(uri),))], jobs=[])

    [done] = run.executed
    assert done.state == "done" and done.target.resource_id == f"{namespace}/{name}"
    assert (done.target.provider, done.target.account, done.target.region) == ("kubernetes", CLUSTER, namespace)
    changed = kube_api.get(*where, namespace, name)
    assert changed is not None
    assert _at(changed, path) == (0 if verb == "scale-to-zero" else True)
    assert done.prior_state is not None and done.prior_state["state"] == "RUNNING"
    if verb == "scale-to-zero":
        assert done.prior_state["replicas"] == before  # journaled for undo

    undone = engine.undo(done.id, actor="ana")

    assert undone.state == "undone"
    restored = kube_api.get(*where, namespace, name)
    assert restored is not None and _at(restored, path) == (before if verb == "scale-to-zero" else False)
    assert not [r for r in kube_api.requests if r.method == "PATCH" and "dryRun" in r.query]


def test_every_action_permission_is_granted_by_the_manifests_and_nothing_more() -> None:
    granted = k8s_rbac_rules("spendwatch-killswitch", "spendwatch-killswitch-pods")
    needed = rbac_rules()
    assert needed <= granted
    writes = {r for r in granted if r.rsplit(":", 1)[1] not in ("get", "list", "watch")}
    assert writes <= needed  # no write verb the actions do not use
    collector = k8s_rbac_rules("spendwatch-collector")
    assert {r.rsplit(":", 1)[1] for r in collector} == {"get", "list", "watch"}


def test_a_suspended_job_loses_its_pods_as_a_watch_shows(kube_api: KubernetesApi, tmp_path: Path) -> None:
    from kubernetes import client, watch

    kube_api.add(job("research", "llm-pretrain", gpus=8, parallelism=2))
    for i in range(2):
        kube_api.add(pod("research", f"llm-pretrain-{i}", owner=("Job", "llm-pretrain"), gpus=8))
    api = kube_api.client()
    since = client.CoreV1Api(api).list_namespaced_pod("research").metadata.resource_version
    engine = _engine(tmp_path, kube_api, [rule(do="suspend", resource_types=["k8s-job"])])
    engine.run(incidents=[_incident(jobs=(_link(f"k8s://{CLUSTER}/research/Job/llm-pretrain"),))], jobs=[])

    events = []
    stream = watch.Watch().stream(
        client.CoreV1Api(api).list_namespaced_pod, "research", resource_version=since, timeout_seconds=5
    )
    for event in stream:
        events.append((event["type"], event["object"].metadata.name))
        if len(events) == 2:
            break
    assert events == [("DELETED", "llm-pretrain-0"), ("DELETED", "llm-pretrain-1")]
    suspended = kube_api.get("batch", "jobs", "research", "llm-pretrain")
    assert suspended is not None and suspended["status"]["active"] == 0
    assert any(c["type"] == "Suspended" for c in suspended["status"]["conditions"])


def test_a_change_between_the_re_read_and_the_patch_is_a_conflict_and_changes_nothing(
    kube_api: KubernetesApi,
) -> None:
    kube_api.add(job("research", "llm-pretrain", gpus=8))
    context = ActionContext(settings([]), {f"k8s:{CLUSTER}": kube_api.client()})
    action = JobSuspend(JobSuspend.options_model(), context)
    target = Target("kubernetes", "k8s-job", "research/llm-pretrain", account=CLUSTER, region="research")
    observed = action.describe(target)
    assert observed is not None and observed.state == "RUNNING"

    kube_api.touch("batch", "jobs", "research", "llm-pretrain", {"metadata": {"labels": {"owner": "someone"}}})

    with pytest.raises(ActionError, match=r"changed since it was re-read \(resourceVersion conflict\)"):
        action.execute(target, observed)
    current = kube_api.get("batch", "jobs", "research", "llm-pretrain")
    assert current is not None and current["spec"]["suspend"] is False


def test_dry_run_asks_the_api_server_and_changes_nothing(kube_api: KubernetesApi, tmp_path: Path) -> None:
    kube_api.add(job("research", "llm-pretrain", gpus=8))
    engine = _engine(tmp_path, kube_api, [rule(do="suspend", how="dry-run", resource_types=["k8s-job"])])

    run = engine.run(incidents=[_incident(jobs=(_link(f"k8s://{CLUSTER}/research/Job/llm-pretrain"),))], jobs=[])

    [planned] = run.dry_run
    assert planned.result is not None and "would suspend Job research/llm-pretrain" in planned.result["summary"]
    [patch] = kube_api.calls("PATCH", "/jobs/llm-pretrain")
    assert patch.query == {"dryRun": "All"}
    current = kube_api.get("batch", "jobs", "research", "llm-pretrain")
    assert current is not None and current["spec"]["suspend"] is False


@pytest.mark.parametrize(
    ("namespace", "labels", "reason"),
    [
        ("kube-system", {}, "protected namespace kube-system"),
        ("research", {"spendwatch-protect": "true"}, "protected by tag spendwatch-protect=true"),
    ],
)
def test_protected_namespaces_and_labels_are_never_touched(
    kube_api: KubernetesApi, tmp_path: Path, namespace: str, labels: dict[str, str], reason: str
) -> None:
    kube_api.add(job(namespace, "llm-pretrain", gpus=8, labels=labels))
    engine = _engine(tmp_path, kube_api, [rule(do="suspend", resource_types=["k8s-job"])])

    run = engine.run(incidents=[_incident(jobs=(_link(f"k8s://{CLUSTER}/{namespace}/Job/llm-pretrain"),))], jobs=[])

    assert not run.executed and any(reason in note.reason for note in run.skipped)
    current = kube_api.get("batch", "jobs", namespace, "llm-pretrain")
    assert current is not None and current["spec"]["suspend"] is False
    assert not kube_api.calls("PATCH")


def test_deleting_a_pod_is_an_irreversible_opt_in(kube_api: KubernetesApi, tmp_path: Path) -> None:
    kube_api.add(pod("research", "stray-gpu-pod", gpus=4))
    link = _link(f"k8s://{CLUSTER}/research/Pod/stray-gpu-pod")
    with pytest.raises(ValueError, match="cannot be undone"):
        settings([rule(do="delete", resource_types=["k8s-pod"])])
    waiting = _engine(tmp_path / "a", kube_api, [rule(do="delete", how="approve")])
    [asked] = waiting.run(incidents=[_incident(jobs=(link,))], jobs=[]).awaiting_approval
    assert not asked.reversible and kube_api.get("", "pods", "research", "stray-gpu-pod") is not None

    engine = _engine(tmp_path / "b", kube_api, [rule(do="delete", allow_irreversible=True)])
    [done] = engine.run(incidents=[_incident(jobs=(link,))], jobs=[]).executed

    assert done.state == "done" and kube_api.get("", "pods", "research", "stray-gpu-pod") is None
    [delete] = kube_api.calls("DELETE", "/pods/stray-gpu-pod")
    assert delete.body["preconditions"]["resourceVersion"]  # never deletes a pod it did not re-read
    with pytest.raises(Exception, match="cannot be undone"):
        engine.undo(done.id, actor="ana")


def test_a_missing_rbac_permission_fails_in_one_line_naming_it(kube_api: KubernetesApi, tmp_path: Path) -> None:
    kube_api.add(job("research", "llm-pretrain", gpus=8))
    kube_api.allow = {"batch/jobs:get"}
    engine = _engine(tmp_path, kube_api, [rule(do="suspend", resource_types=["k8s-job"])])

    run = engine.run(incidents=[_incident(jobs=(_link(f"k8s://{CLUSTER}/research/Job/llm-pretrain"),))], jobs=[])

    [failed] = run.failed
    assert failed.error is not None and "\n" not in failed.error
    assert 'cannot patch resource "jobs" in API group "batch"' in failed.error
    assert "lacks this RBAC permission" in failed.error
    assert [a.state for a in list_actions(engine.store)] == ["failed"]


def test_a_cluster_not_under_killswitch_kubernetes_is_refused_in_one_line(tmp_path: Path) -> None:
    """Where a cluster runs comes from the config, never from the record naming it."""
    config = settings([rule(do="suspend", how="dry-run", resource_types=["k8s-job"])], kubernetes=CLUSTERS)
    engine = KillSwitch(config, new_store(tmp_path, FixedClock(NOW)), FixedClock(NOW))
    run = engine.run(incidents=[_incident(jobs=(_link("k8s://gke-x/research/Job/train"),))], jobs=[])
    assert run.planned == [] and list_actions(engine.store) == []
    [note] = run.skipped
    assert "\n" not in note.reason and "outside the rule's scope" in note.reason
    assert "cluster gke-x is not under killswitch.kubernetes.clusters" in note.reason


def test_a_cluster_configured_in_another_account_is_out_of_the_incidents_scope(
    kube_api: KubernetesApi, tmp_path: Path
) -> None:
    """A job record on 678901234567's spend naming a cluster that runs in another account reaches nothing."""
    kube_api.add(job("payments", "settle", gpus=0))
    elsewhere = {"clusters": {**CLUSTERS["clusters"], "prod-eks": {"provider": "aws", "account": "456789012345",
                                                                    "auth": "none"}}}  # fmt: skip
    config = settings([rule(do="suspend", resource_types=["k8s-job"])], kubernetes=elsewhere)
    store = new_store(tmp_path, FixedClock(NOW))
    engine = KillSwitch(config, store, FixedClock(NOW), clients={"k8s": kube_api.client()})
    run = engine.run(incidents=[_incident(jobs=(_link("k8s://prod-eks/payments/Job/settle"),))], jobs=[])
    [note] = run.skipped
    assert "account/project 456789012345 is not incident #1's 678901234567" in note.reason
    assert not kube_api.calls("PATCH") and not kube_api.calls("GET")


@pytest.mark.parametrize(
    ("dimensions", "acted"),
    [
        ({"cluster": [CLUSTER], "namespace": ["research"]}, True),
        ({"namespace": ["serving"]}, False),
        ({"cluster": ["gke-*"]}, False),
        ({"provider": ["aws"], "sub_account_id": [EKS_ACCOUNT], "region_id": ["us-*"]}, True),
        ({"region_id": ["eu-*"]}, False),
    ],
)
def test_a_rules_cluster_namespace_and_region_bind_kubernetes_targets(
    kube_api: KubernetesApi, tmp_path: Path, dimensions: dict[str, list[str]], acted: bool
) -> None:
    kube_api.add(job("research", "llm-pretrain", gpus=8))
    spec = rule(do="suspend", how="dry-run", resource_types=["k8s-job"], when={"incident": {"dimensions": dimensions}})
    engine = _engine(tmp_path, kube_api, [spec])
    found = _incident(jobs=(_link(f"k8s://{CLUSTER}/research/Job/llm-pretrain"),))
    # The incident itself names the dimensions the rule matches on (as a [cluster, namespace] monitor's would).
    found = replace(found, dimensions={**found.dimensions, "cluster": CLUSTER, "namespace": "research"})
    run = engine.run(incidents=[found], jobs=[])
    if not incident_matches(engine.settings.rules[0].when.incident, found):
        assert not acted
        return
    assert bool(run.dry_run) is acted
    if not acted:
        [note] = run.skipped
        assert "outside the rule's scope" in note.reason


def test_an_incident_naming_another_namespace_cannot_reach_this_one(kube_api: KubernetesApi, tmp_path: Path) -> None:
    kube_api.add(job("research", "llm-pretrain", gpus=8))
    engine = _engine(tmp_path, kube_api, [rule(do="suspend", resource_types=["k8s-job"])])
    found = _incident(jobs=(_link(f"k8s://{CLUSTER}/research/Job/llm-pretrain"),))
    found = replace(found, dimensions={**found.dimensions, "cluster": CLUSTER, "namespace": "serving"})
    run = engine.run(incidents=[found], jobs=[])
    [note] = run.skipped
    assert "namespace research is not incident #1's serving" in note.reason
    assert not kube_api.calls("PATCH")


def test_a_named_only_cluster_plans_in_dry_run_without_reaching_anything(tmp_path: Path) -> None:
    """The demo's clusters: placed by the config (auth: none, no server), planned, never contacted."""
    config = settings([rule(do="suspend", how="dry-run", resource_types=["k8s-job"])], kubernetes=CLUSTERS)
    engine = KillSwitch(config, new_store(tmp_path, FixedClock(NOW)), FixedClock(NOW))
    run = engine.run(incidents=[_incident(jobs=(_link(f"k8s://{CLUSTER}/research/Job/train"),))], jobs=[])
    [planned] = run.dry_run
    assert planned.result is not None and planned.result["verified"] is False
    assert "current state not verified: the cluster is only named" in planned.result["summary"]


def test_without_the_extra_a_kubernetes_action_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import spendwatch.k8s_client as k8s_client

    monkeypatch.setattr(k8s_client, "kubernetes_installed", lambda: False)
    monkeypatch.setattr("spendwatch.killswitch.config.kubernetes_installed", lambda: False)
    reachable = {"clusters": {CLUSTER: {"provider": "aws", "account": EKS_ACCOUNT, "context": "eks"}}}
    with pytest.raises(ValueError, match=r"pip install 'spendwatch\[kubernetes\]'"):
        settings([rule(do="suspend", how="dry-run", resource_types=["k8s-job"])], kubernetes=reachable)
    config = settings([rule(do="suspend", how="dry-run", resource_types=["k8s-job"])], kubernetes=CLUSTERS)
    connection = config.kubernetes.clusters[CLUSTER].model_copy(update={"auth": "kubeconfig"})
    context = ActionContext(config.model_copy(update={"kubernetes": type(config.kubernetes)(
        clusters={CLUSTER: connection})}), {})  # fmt: skip
    target = Target("kubernetes", "k8s-job", "research/train", account=CLUSTER, region="research")
    with pytest.raises(ActionError, match=r"^the Kubernetes client is not installed"):
        JobSuspend(JobSuspend.options_model(), context).describe(target)
