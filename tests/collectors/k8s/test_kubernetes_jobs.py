"""The ``kubernetes-jobs`` source: the real ``kubernetes`` client against the API server double."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("kubernetes", reason="pip install -e '.[dev]' brings the kubernetes extra")

from spendwatch.collect import collect_source
from spendwatch.config import Config, parse_config
from spendwatch.errors import ConfigError
from spendwatch.store import Store
from tests.doubles.clock import FixedClock
from tests.doubles.kubernetes_api import KubernetesApi, pod
from tests.doubles.kubernetes_estate import (
    A2,
    CHEN,
    DIVYA,
    EKS,
    EKS_ACCOUNT,
    FATIMA,
    GKE,
    GKE_PROJECT,
    M5,
    N1_T4,
    P4D,
    eks_cluster,
    gke_cluster,
)
from tests.killswitch.conftest import k8s_rbac_rules

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
STARTED = NOW - timedelta(hours=3)


def _config(tmp_path: Path, endpoint: str, **extra: Any) -> Config:
    source = {
        "name": "k8s",
        "type": "kubernetes-jobs",
        "clusters": {
            EKS: {"auth": "none", "server": endpoint, "provider": "aws", "account": EKS_ACCOUNT, "region": "us-west-2"},
        },
        **extra,
    }
    return Config.model_validate({"store": {"path": str(tmp_path / "s.duckdb")}, "sources": [source]})


def _jobs(store: Store) -> dict[str, dict[str, Any]]:
    names = ["job_id", "name", "provider", "sub_account_id", "region_id", "owner", "owner_source", "state",
             "start_time", "end_time", "instance_type", "instance_count", "max_runtime_seconds", "estimated_cost",
             "projected_cost", "cost_method", "source", "labels"]  # fmt: skip
    rows = store.query(f"SELECT {', '.join(chr(34) + n + chr(34) for n in names)} FROM jobs ORDER BY job_id")
    return {str(r[0]): dict(zip(names, r, strict=True)) for r in rows}


def test_the_eks_estate_becomes_job_records_with_owners_gpus_and_cost(kube_api: KubernetesApi, tmp_path: Path) -> None:
    eks_cluster(kube_api, STARTED)
    kube_api.allow = k8s_rbac_rules("spendwatch-collector")  # exactly what the shipped read-only role grants
    config = _config(tmp_path, kube_api.endpoint)
    clock = FixedClock(NOW)
    store = Store(config.store.path, clock=clock)

    run = collect_source(config.sources[0], store, clock)

    assert run.error is None and run.problems == []
    jobs = _jobs(store)
    assert set(jobs) == {
        f"k8s://{EKS}/research/Job/llm-pretrain-fatima",
        f"k8s://{EKS}/research/Pod/stray-notebook",
        f"k8s://{EKS}/data/Job/feature-backfill-29001",
    }  # the Deployment is not tracked by default; kube-system is never recorded
    train = jobs[f"k8s://{EKS}/research/Job/llm-pretrain-fatima"]
    assert (train["provider"], train["sub_account_id"], train["region_id"]) == ("aws", EKS_ACCOUNT, "us-west-2")
    assert (train["owner"], train["owner_source"], train["state"]) == (FATIMA, "label:owner", "RUNNING")
    assert (train["instance_type"], train["instance_count"]) == ("p4d.24xlarge", 2)
    assert train["estimated_cost"] == pytest.approx(2 * P4D * 3)  # two whole GPU nodes for three hours
    labels = dict(train["labels"])
    assert labels["k8s:gpus"] == "16" and labels["k8s:kind"] == "Job" and labels["k8s:nodegroup"] == "gpu-p4d"
    assert labels["team"] == "ml-research" and labels["k8s:namespace"] == "research"
    assert "16 GPU(s) requested; 2 pod(s) on 2 × p4d.24xlarge" in train["cost_method"]
    assert jobs[f"k8s://{EKS}/research/Pod/stray-notebook"]["owner"] == CHEN
    backfill = jobs[f"k8s://{EKS}/data/Job/feature-backfill-29001"]
    assert backfill["owner"] == "data-platform" and dict(backfill["labels"])["k8s:cronjob"] == "feature-backfill"
    # 2 of 16 CPUs vs 8 of 64 GiB: 1/8 of the m5.4xlarge for two hours; projected to its 4 h deadline.
    assert backfill["estimated_cost"] == pytest.approx(M5 / 8 * 2)
    assert backfill["projected_cost"] == pytest.approx(M5 / 8 * 4)
    assert backfill["max_runtime_seconds"] == 4 * 3600
    assert not [r for r in kube_api.requests if r.method != "GET"]  # the source only reads


def test_kuberay_and_kubeflow_workloads_on_gke(kube_api: KubernetesApi, tmp_path: Path) -> None:
    gke_cluster(kube_api, STARTED)
    source = {"name": "k8s", "type": "kubernetes-jobs",
              "clusters": {GKE: {"auth": "none", "server": kube_api.endpoint, "provider": "gcp",
                                 "account": GKE_PROJECT, "region": "us-central1"}}}  # fmt: skip
    config = Config.model_validate({"store": {"path": str(tmp_path / "s.duckdb")}, "sources": [source]})
    clock = FixedClock(NOW)
    store = Store(config.store.path, clock=clock)
    collect_source(config.sources[0], store, clock)
    jobs = _jobs(store)
    ray = jobs[f"k8s://{GKE}/research/RayCluster/ray-dev"]
    head_share = max(4 / 16, 15 / 60)  # the head requests no GPU on a node no one else uses the GPUs of
    assert ray["owner"] == DIVYA and dict(ray["labels"])["k8s:gpus"] == "8"
    assert ray["estimated_cost"] == pytest.approx((A2 + head_share * N1_T4) * 3)
    assert ray["provider"] == "gcp" and ray["sub_account_id"] == GKE_PROJECT
    sweep = jobs[f"k8s://{GKE}/research/RayJob/sweep-7"]  # its RayCluster's pods belong to the RayJob
    assert sweep["owner"] == DIVYA and sweep["estimated_cost"] == pytest.approx(N1_T4 * 3)
    assert f"k8s://{GKE}/research/RayCluster/sweep-7-raycluster" not in jobs
    ddp = jobs[f"k8s://{GKE}/research/PyTorchJob/ddp-bert"]
    assert ddp["state"] == "PENDING" and ddp["estimated_cost"] == 0.0


def test_a_cluster_without_kuberay_or_kubeflow_is_read_without_them(kube_api: KubernetesApi, tmp_path: Path) -> None:
    eks_cluster(kube_api, STARTED)
    kube_api.absent = {("ray.io", "rayjobs"), ("ray.io", "rayclusters"), ("kubeflow.org", "pytorchjobs"),
                       ("kubeflow.org", "tfjobs")}  # fmt: skip
    config = _config(tmp_path, kube_api.endpoint)
    clock = FixedClock(NOW)
    store = Store(config.store.path, clock=clock)
    run = collect_source(config.sources[0], store, clock)
    assert run.problems == [] and f"k8s://{EKS}/research/Job/llm-pretrain-fatima" in _jobs(store)


def test_lists_are_paged_and_every_page_is_read(kube_api: KubernetesApi, tmp_path: Path) -> None:
    eks_cluster(kube_api, STARTED)
    for i in range(25):
        kube_api.add(pod("batch", f"tiny-{i:02d}", node="cpu-1", cpu="10m", memory="16Mi", labels={"owner": "ana"}))
    config = _config(tmp_path, kube_api.endpoint, page_size=10)
    clock = FixedClock(NOW)
    store = Store(config.store.path, clock=clock)
    collect_source(config.sources[0], store, clock)
    assert len([j for j in _jobs(store) if "/batch/Pod/tiny-" in j]) == 25
    pages = kube_api.calls("GET", "/api/v1/pods")
    assert len(pages) == 4 and all(r.query["limit"] == "10" for r in pages)  # 32 live pods, 10 a page
    assert [bool(r.query.get("continue")) for r in pages] == [False, True, True, True]
    assert all(r.query["fieldSelector"] == "status.phase!=Succeeded,status.phase!=Failed" for r in pages)


def test_a_workload_no_longer_running_is_recorded_ended(kube_api: KubernetesApi, tmp_path: Path) -> None:
    eks_cluster(kube_api, STARTED)
    config = _config(tmp_path, kube_api.endpoint)
    clock = FixedClock(NOW)
    store = Store(config.store.path, clock=clock)
    collect_source(config.sources[0], store, clock)
    with kube_api.changed:  # the notebook's pod is deleted
        del kube_api.objects[("", "pods", "research", "stray-notebook")]
    clock.advance(minutes=5)
    collect_source(config.sources[0], store, clock)
    notebook = _jobs(store)[f"k8s://{EKS}/research/Pod/stray-notebook"]
    assert notebook["state"] == "ENDED" and notebook["end_time"] == NOW
    assert notebook["estimated_cost"] is not None and notebook["owner"] == CHEN  # last figures kept
    assert _jobs(store)[f"k8s://{EKS}/research/Job/llm-pretrain-fatima"]["state"] == "RUNNING"


def test_a_cluster_that_cannot_be_read_is_a_one_line_problem_and_leaves_its_records(
    kube_api: KubernetesApi, tmp_path: Path
) -> None:
    eks_cluster(kube_api, STARTED)
    config = _config(tmp_path, kube_api.endpoint)
    clock = FixedClock(NOW)
    store = Store(config.store.path, clock=clock)
    collect_source(config.sources[0], store, clock)
    kube_api.allow = k8s_rbac_rules("spendwatch-collector") - {"pods:list"}
    clock.advance(minutes=5)
    run = collect_source(config.sources[0], store, clock)
    [problem] = run.problems
    assert "\n" not in problem and 'cannot list resource "pods"' in problem
    assert "lacks this RBAC permission" in problem
    assert {j["state"] for j in _jobs(store).values()} == {"RUNNING"}  # a failed read ends nothing


def test_namespaces_and_kinds_select_what_is_recorded(kube_api: KubernetesApi, tmp_path: Path) -> None:
    eks_cluster(kube_api, STARTED)
    config = _config(tmp_path, kube_api.endpoint, namespaces=["serv*", "data"], kinds=["Job", "Deployment"])
    clock = FixedClock(NOW)
    store = Store(config.store.path, clock=clock)
    collect_source(config.sources[0], store, clock)
    assert set(_jobs(store)) == {
        f"k8s://{EKS}/serving/Deployment/embeddings-api",
        f"k8s://{EKS}/data/Job/feature-backfill-29001",
    }
    assert _jobs(store)[f"k8s://{EKS}/serving/Deployment/embeddings-api"]["owner"] == "mo.ali@example.com"


@pytest.mark.parametrize(
    ("clusters", "message"),
    [
        ("{'eks/x': {auth: none, server: 'http://127.0.0.1:1'}}", "is not a cluster name"),
        ("{eks: {auth: none}}", "auth: none needs a server here"),
        ("{}", "at least 1 item"),
    ],
)
def test_bad_cluster_config_is_one_line_naming_the_key(tmp_path: Path, clusters: str, message: str) -> None:
    text = f"store: {{path: s.duckdb}}\nsources:\n  - name: k8s\n    type: kubernetes-jobs\n    clusters: {clusters}\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, tmp_path / "sw.yaml", environ={})
    assert "\n" not in str(caught.value) and message in str(caught.value) and "sources[0].clusters" in str(caught.value)


def test_a_cluster_the_kill_switch_places_elsewhere_is_a_config_error(tmp_path: Path) -> None:
    text = (
        "store: {path: s.duckdb}\nsources:\n  - name: k8s\n    type: kubernetes-jobs\n"
        "    clusters: {eks: {context: eks, provider: aws, account: '678901234567'}}\n"
        "killswitch:\n  kubernetes:\n    clusters: {eks: {context: eks, provider: aws, account: '456789012345'}}\n"
    )
    with pytest.raises(
        ConfigError, match="provider/account aws/456789012345 differ from source k8s's aws/678901234567"
    ):
        parse_config(text, tmp_path / "sw.yaml", environ={})
