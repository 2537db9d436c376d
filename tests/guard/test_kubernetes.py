"""The guard on Kubernetes, end to end: the real ``kubernetes`` client reads the API server double, the
guard prices each workload's pods from its nodes, opens an incident on a breach, and the kill switch
suspends the workload (or journals that it would) through the same journal as every other action."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("kubernetes", reason="pip install -e '.[dev]' brings the kubernetes extra")

from spendwatch.config import Config
from spendwatch.detect.incidents import load_incidents
from spendwatch.guard import GuardRun, run_guard
from spendwatch.guard.state import WatchState
from spendwatch.killswitch.journal import list_actions
from spendwatch.store import Store
from tests.doubles.clock import FixedClock
from tests.doubles.kubernetes_api import KubernetesApi
from tests.doubles.kubernetes_estate import (
    A2,
    DIVYA,
    EKS,
    EKS_ACCOUNT,
    FATIMA,
    G5,
    GKE,
    GKE_PROJECT,
    M5,
    N1_T4,
    P4D,
    eks_cluster,
    gke_cluster,
)
from tests.killswitch.conftest import k8s_rbac_rules

STARTED = datetime(2026, 11, 19, 16, 0, tzinfo=UTC)
OFF = {"job_cost": None, "job_projected_cost": None, "user_daily_cost": None, "project_burn_rate": None}
# The RayCluster's $/hour: its 8-GPU worker holds the whole a2-highgpu-8g; its head the larger of
# 4/16 CPUs and 15/60 GiB of an n1-standard-16 + 4 T4 whose GPUs nobody requests.
RAY_RATE = A2 + max(4 / 16, 15 / 60) * N1_T4
CAP = 500.0


def _clusters(endpoint: str) -> dict[str, Any]:
    return {
        GKE: {"auth": "none", "server": endpoint, "provider": "gcp", "account": GKE_PROJECT, "region": "us-central1"},
        EKS: {"auth": "none", "server": endpoint, "provider": "aws", "account": EKS_ACCOUNT, "region": "us-west-2"},
    }


def _config(
    tmp_path: Path, api: KubernetesApi, *, guard: dict[str, Any], rules: list[dict[str, Any]] | None = None,
    clusters: tuple[str, ...] = (GKE,),
) -> Config:  # fmt: skip
    every = _clusters(api.endpoint)
    chosen = {name: every[name] for name in clusters}
    return Config.model_validate(
        {
            "store": {"path": str(tmp_path / "store.duckdb")},
            "sources": [{"name": "k8s", "type": "kubernetes-jobs", "clusters": chosen}],
            "guard": guard,
            "killswitch": {
                "rules": rules or [],
                "approvers": ["oncall@example.com"],
                "kubernetes": {"clusters": chosen},
            },
        }
    )


def _suspend_rule(how: str) -> dict[str, Any]:
    return {
        "name": "suspend-forgotten-gpu-workloads",
        "when": {"incident": {"kinds": ["guard"]}},
        "do": "suspend",
        "resource_types": ["k8s-job", "k8s-raycluster", "k8s-rayjob", "k8s-pytorchjob", "k8s-tfjob"],
        "how": how,
    }


def _ray_guard() -> dict[str, Any]:
    return {
        "defaults": OFF,
        "guards": [
            {
                "name": "gpu-workloads",
                "match": {"platforms": ["kubernetes"], "namespaces": ["research"]},
                "job_cost": CAP,
            }
        ],
    }


def _replay(config: Config, store: Store, clock: FixedClock, state: WatchState, polls: int) -> list[GuardRun]:
    runs = []
    for _ in range(polls):
        clock.advance(minutes=1)
        runs.append(run_guard(config, store, clock, state=state))
    return runs


def _only_ray(api: KubernetesApi) -> None:
    """The GKE estate without the RayJob and the PyTorchJob: the forgotten RayCluster alone."""
    gke_cluster(api, STARTED)
    with api.changed:
        for key in [k for k in api.objects if "sweep-7" in k[3] or "ddp-bert" in k[3]]:
            del api.objects[key]


@pytest.mark.parametrize("how", ["dry-run", "enforce"])
def test_a_forgotten_8_gpu_raycluster_crosses_its_cap_and_is_caught_at_the_next_poll(
    kube_api: KubernetesApi, tmp_path: Path, how: str
) -> None:
    _only_ray(kube_api)
    kube_api.allow = k8s_rbac_rules("spendwatch-collector", "spendwatch-killswitch")
    crossed = STARTED + timedelta(hours=CAP / RAY_RATE)  # ~16 h 41 min after it started
    clock = FixedClock(crossed.replace(second=0, microsecond=0) - timedelta(minutes=3))
    config = _config(tmp_path, kube_api, guard=_ray_guard(), rules=[_suspend_rule(how)])
    store = Store(config.store.path, clock=clock)
    state = WatchState.new(config.guard)

    runs = _replay(config, store, clock, state, 6)

    caught = next(i for i, r in enumerate(runs) if r.incidents.opened)
    caught_at = runs[caught].started_at
    assert caught_at - crossed <= timedelta(minutes=1) and caught_at > crossed  # the first poll past the cap
    assert all(not r.breaches for r in runs[:caught])
    [incident] = load_incidents(store, kinds=["guard"], statuses=None)
    assert incident.dimensions["owner"] == DIVYA and incident.dimensions["platform"] == "kubernetes"
    assert (incident.dimensions["provider"], incident.dimensions["sub_account_id"]) == ("gcp", GKE_PROJECT)
    hours = (caught_at - STARTED).total_seconds() / 3600
    assert runs[caught].breaches[0].actual == pytest.approx(RAY_RATE * hours)  # its pods' shares × node prices
    [link] = incident.jobs
    assert link.job_id == f"k8s://{GKE}/research/RayCluster/ray-dev" and link.user == DIVYA
    assert "Kubernetes RayCluster research/ray-dev in gke-research of divya.rao@example.com has cost" in (
        runs[caught].breaches[0].summary
    )
    [action] = list_actions(store)
    assert (action.verb, action.mode, action.target.resource_type) == ("suspend", how, "k8s-raycluster")
    assert (action.target.account, action.target.region, action.target.resource_id) == (GKE, "research",
                                                                                       "research/ray-dev")  # fmt: skip
    cluster = kube_api.get("ray.io", "rayclusters", "research", "ray-dev")
    assert cluster is not None
    if how == "dry-run":
        assert action.state == "skipped" and action.result is not None
        assert "would suspend RayCluster research/ray-dev" in action.result["summary"]
        assert cluster["spec"].get("suspend") is not True  # nothing changed
        assert kube_api.get("", "pods", "research", "ray-dev-worker-gpu-0") is not None
        assert incident.status == "ongoing"  # it runs on; every poll updates the same incident
        return
    assert action.state == "done"
    assert cluster["spec"]["suspend"] is True
    assert kube_api.get("", "pods", "research", "ray-dev-worker-gpu-0") is None  # KubeRay deleted its pods
    after = runs[caught + 1]
    assert after.incidents.resolved == [incident.id] and incident.status == "resolved"
    assert not [e for e in after.estimates if e.record["name"] == "ray-dev"]  # no pod: nothing burns


def test_a_cluster_over_its_accounts_burn_rate_cap(kube_api: KubernetesApi, tmp_path: Path) -> None:
    eks_cluster(kube_api, STARTED)
    guard = {"defaults": {**OFF, "project_burn_rate": 60.0}}
    config = _config(tmp_path, kube_api, guard=guard, clusters=(EKS,))
    clock = FixedClock(STARTED + timedelta(hours=2))
    store = Store(config.store.path, clock=clock)

    run = run_guard(config, store, clock, state=WatchState.new(config.guard))

    [breach] = run.breaches
    burn = 2 * P4D + G5 + M5 / 8  # the 16-GPU Job, the notebook's GPU, the backfill's eighth of an m5.4xlarge
    assert breach.limit == "project-burn-rate" and breach.actual == pytest.approx(burn)
    assert breach.subject == f"aws:{EKS_ACCOUNT}|USD"
    assert breach.jobs[0].job_id == f"k8s://{EKS}/research/Job/llm-pretrain-fatima" and breach.jobs[0].user == FATIMA
    by_name = {e.record["name"]: e for e in run.estimates}
    assert by_name["llm-pretrain-fatima"].burn_rate == pytest.approx(2 * P4D)
    assert by_name["llm-pretrain-fatima"].burn_method == "its live pods' shares of their nodes' prices now"
    assert by_name["llm-pretrain-fatima"].cost == pytest.approx(2 * P4D * 2)


def test_a_user_over_the_daily_cap_counts_their_workloads(kube_api: KubernetesApi, tmp_path: Path) -> None:
    eks_cluster(kube_api, STARTED)
    guard = {"defaults": {**OFF, "user_daily_cost": 150.0}}
    config = _config(tmp_path, kube_api, guard=guard, clusters=(EKS,))
    clock = FixedClock(datetime(2026, 11, 19, 18, 30, tzinfo=UTC))  # 2.5 h in: $163.86 on the Job today
    store = Store(config.store.path, clock=clock)
    run = run_guard(config, store, clock, state=WatchState.new(config.guard))
    [breach] = run.breaches
    assert breach.limit == "user-daily-cost" and breach.dimensions["owner"] == FATIMA
    assert breach.actual == pytest.approx(2 * P4D * 2.5)


def test_a_cluster_that_fails_a_poll_keeps_its_incident_open_and_its_last_workloads(
    kube_api: KubernetesApi, tmp_path: Path
) -> None:
    eks_cluster(kube_api, STARTED)
    guard = {"defaults": {**OFF, "job_cost": 50.0}}  # the Job: $65.55 after an hour
    config = _config(tmp_path, kube_api, guard=guard, clusters=(EKS,))
    clock = FixedClock(STARTED + timedelta(hours=1))
    store = Store(config.store.path, clock=clock)
    state = WatchState.new(config.guard)
    first = run_guard(config, store, clock, state=state)
    assert [b.subject for b in first.breaches] == [f"kubernetes:k8s://{EKS}/research/Job/llm-pretrain-fatima"]

    kube_api.fail("GET", "/api/v1/pods", 503, times=5)
    clock.advance(minutes=1)
    second = run_guard(config, store, clock, state=state)

    [problem] = second.problems
    assert problem.startswith(f"k8s {EKS}: list on pods in cluster {EKS} failed: 503") and "\n" not in problem
    assert {e.record["name"] for e in second.estimates} == {e.record["name"] for e in first.estimates}
    [incident] = load_incidents(store, kinds=["guard"])
    assert incident.status in ("open", "ongoing") and second.incidents.resolved == []


def test_each_poll_lists_a_few_kinds_per_cluster_and_remembers_missing_crds(
    kube_api: KubernetesApi, tmp_path: Path
) -> None:
    eks_cluster(kube_api, STARTED)
    kube_api.absent = {("ray.io", "rayjobs"), ("ray.io", "rayclusters"), ("kubeflow.org", "pytorchjobs"),
                       ("kubeflow.org", "tfjobs")}  # fmt: skip
    config = _config(tmp_path, kube_api, guard={"defaults": OFF}, clusters=(EKS,))
    clock = FixedClock(STARTED + timedelta(hours=1))
    store = Store(config.store.path, clock=clock)
    state = WatchState.new(config.guard)
    first = run_guard(config, store, clock, state=state)
    assert first.poll is not None and first.poll.api_calls == {"kubernetes:list": 7}  # nodes, pods, jobs, 4 CRDs
    for _ in range(3):
        clock.advance(minutes=1)
        later = run_guard(config, store, clock, state=state)
        assert later.poll is not None and later.poll.api_calls == {"kubernetes:list": 3}  # the CRDs are not asked
    clock.advance(minutes=11)  # past describe_ttl (10 min): a CRD installed since would be seen
    again = run_guard(config, store, clock, state=state)
    assert again.poll is not None and again.poll.api_calls == {"kubernetes:list": 7}


def test_guards_match_clusters_and_namespaces(kube_api: KubernetesApi, tmp_path: Path) -> None:
    eks_cluster(kube_api, STARTED)
    guard = {
        "defaults": {**OFF, "job_cost": 10_000.0},
        "guards": [
            {"name": "data-jobs", "match": {"clusters": ["eks-*"], "namespaces": ["data"]}, "job_cost": 0.1},
            {"name": "other-cluster", "match": {"clusters": ["gke-*"]}, "job_cost": 0.01},
        ],
    }
    config = _config(tmp_path, kube_api, guard=guard, clusters=(EKS,))
    clock = FixedClock(STARTED + timedelta(hours=3))
    store = Store(config.store.path, clock=clock)
    run = run_guard(config, store, clock, state=WatchState.new(config.guard))
    [breach] = run.breaches  # the backfill's $0.19 is over the data guard's $0.10; nothing else reaches a cap
    assert breach.guard == "data-jobs" and breach.jobs[0].name == "feature-backfill-29001"


def test_the_guard_records_workloads_and_ends_the_ones_that_stop(kube_api: KubernetesApi, tmp_path: Path) -> None:
    eks_cluster(kube_api, STARTED)
    config = _config(tmp_path, kube_api, guard={"defaults": OFF}, clusters=(EKS,))
    clock = FixedClock(STARTED + timedelta(hours=1))
    store = Store(config.store.path, clock=clock)
    state = WatchState.new(config.guard)
    run_guard(config, store, clock, state=state)
    rows = store.query("SELECT job_id, source, state FROM jobs ORDER BY job_id")
    assert {(r[1], r[2]) for r in rows} == {("guard:k8s", "RUNNING")} and len(rows) == 3
    with kube_api.changed:
        del kube_api.objects[("", "pods", "research", "stray-notebook")]
    clock.advance(minutes=1)
    run = run_guard(config, store, clock, state=state)
    assert run.ended == 1
    [(state_now,)] = store.query(
        "SELECT state FROM jobs WHERE job_id = ?", [f"k8s://{EKS}/research/Pod/stray-notebook"]
    )
    assert state_now == "ENDED"


def test_the_audit_names_training_workloads_without_a_deadline(kube_api: KubernetesApi, tmp_path: Path) -> None:
    from spendwatch.guard.audit import audit

    eks_cluster(kube_api, STARTED)
    gke_cluster(kube_api, STARTED)  # the same API server: one cluster holding both estates' workloads
    config = _config(tmp_path, kube_api, guard={"defaults": OFF}, clusters=(EKS,))
    report = audit(config, now=STARTED + timedelta(hours=1))
    found = {(f.where, f.resource): f for f in report.findings}
    assert report.problems == [] and report.checked == {"kubernetes": 6}
    job = found[(f"{EKS}/research", "Job/llm-pretrain-fatima")]
    assert job.problem == "no spec.activeDeadlineSeconds: it runs until someone stops it"
    assert job.fix.startswith(
        f"kubectl --context {EKS} -n research patch job llm-pretrain-fatima --type merge "
        """-p '{"spec":{"activeDeadlineSeconds":259200}}'"""
    )
    assert "no spec.runPolicy.activeDeadlineSeconds" in found[(f"{EKS}/research", "PyTorchJob/ddp-bert")].problem
    assert "no spec.activeDeadlineSeconds" in found[(f"{EKS}/research", "RayJob/sweep-7")].problem
    assert "holds 8 GPU(s) and a RayCluster has no deadline" in found[(f"{EKS}/research", "RayCluster/ray-dev")].problem
    assert (f"{EKS}/data", "Job/feature-backfill-29001") not in found  # its 4 h deadline is within 3 days
    assert (f"{EKS}/research", "Pod/stray-notebook") in found  # a bare pod holding a GPU, no deadline
