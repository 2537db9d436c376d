"""Pricing running workloads: requests as the scheduler counts them, node prices, shares by requests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

pytest.importorskip("kubernetes", reason="pip install -e '.[dev]' brings the kubernetes extra")

from spendwatch.collectors.aws.prices import EC2_HOURLY
from spendwatch.collectors.aws.prices import PriceTable as AwsPrices
from spendwatch.collectors.gcp.prices import BUNDLED
from spendwatch.collectors.k8s.inventory import Inventory
from spendwatch.collectors.k8s.workloads import (
    ClusterPlace,
    NodePricer,
    Requests,
    pod_requests,
    quantity,
    timestamp,
    workload_records,
)
from tests.doubles.kubernetes_api import node, pod

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
AWS = ClusterPlace("eks", "aws", "678901234567", "us-west-2")


def _container(
    cpu: str | None = None, memory: str | None = None, gpu: str | None = None, **extra: Any
) -> dict[str, Any]:
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory), ("nvidia.com/gpu", gpu)) if v is not None}
    return {"name": "c", "resources": {"requests": requests}, **extra}


def test_quantities_and_timestamps_as_the_api_writes_them() -> None:
    assert quantity("500m") == 0.5 and quantity("64Gi") == 64 * 2**30 and quantity("2") == 2.0
    assert quantity("1e3") == 1000.0 and quantity(None) == 0.0 and quantity("lots") == 0.0
    assert timestamp("2026-11-23T09:00:00Z") == datetime(2026, 11, 23, 9, tzinfo=UTC)
    assert timestamp("not a time") is None and timestamp(None) is None


def test_requests_count_sidecars_init_steps_and_overhead_as_the_scheduler_does() -> None:
    spec = {
        "containers": [_container("1", "1Gi"), _container("2", "1Gi", "1")],
        "initContainers": [
            _container("8", "1Gi"),  # a heavy init step: alone, before the sidecar starts
            _container("500m", "256Mi", restartPolicy="Always"),  # a sidecar: runs beside the containers
            _container("1", "32Gi"),  # an init step after the sidecar: 1 + 0.5 CPU, 32.25 GiB
        ],
        "overhead": {"cpu": "250m", "memory": "128Mi"},
    }
    got = pod_requests({"spec": spec})
    # CPU: max(3 + 0.5, 8, 0.5 + 1) + 0.25; memory: max(2 + 0.25, 1, 0.25 + 32) GiB + 128 MiB; GPUs 1.
    assert got == Requests(8.25, (32.25 + 0.125) * 2**30, 1.0)
    limits_only = {"spec": {"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "2"}}}]}}
    assert pod_requests(limits_only).gpus == 2.0  # the API server copies the limit into the request


def _pricer(**extra: Any) -> NodePricer:
    return NodePricer("aws", "us-west-2", aws=AwsPrices({}), gcp=BUNDLED, **extra)


def _records(nodes: list[dict[str, Any]], pods: list[dict[str, Any]], **extra: Any) -> dict[str, dict[str, Any]]:
    inventory = Inventory(nodes={n["metadata"]["name"]: n for n in nodes}, pods=pods)
    pricer = extra.pop("pricer", None) or _pricer()
    records = workload_records(inventory, extra.pop("place", AWS), pricer, now=NOW, tracked=["Pod", "Job"],
                               owner_labels=["owner"], **extra)  # fmt: skip
    return {r["name"]: r for r in records}


def test_a_gpu_node_is_shared_by_the_gpu_pods_and_a_daemonset_rides_along() -> None:
    started = "2026-11-20T09:00:00Z"  # 3 h before NOW
    nodes = [node("g", "p4d.24xlarge", gpus=8)]
    pods = [
        pod("ml", "six", gpus=6, node="g", start=started, cpu="8"),
        pod("ml", "two", gpus=2, node="g", start=started, cpu="80"),  # 2 GPUs but most of the CPUs
        pod("kube-system", "ds", owner=("DaemonSet", "x"), node="g", start=started, cpu="1"),
    ]
    found = _records(nodes, pods)
    price = EC2_HOURLY["p4d.24xlarge"]
    six, two = 6 / 8, 80 / 96  # dominant shares: GPUs for one, CPUs for the other; together over 1
    scale = six + two
    assert found["six"]["burn_rate"] == pytest.approx(price * six / scale)
    assert found["two"]["burn_rate"] == pytest.approx(price * two / scale)
    assert found["six"]["estimated_cost"] + found["two"]["estimated_cost"] == pytest.approx(price * 3)
    assert "ds" not in found  # a DaemonSet is not a tracked kind (and paid nothing on the GPU node)


def test_a_cpu_node_is_shared_by_the_larger_of_cpu_and_memory() -> None:
    nodes = [node("c", "m5.4xlarge", cpu="16", memory="64Gi")]
    pods = [pod("a", "cpu-heavy", node="c", cpu="4", memory="4Gi", start="2026-11-20T11:00:00Z"),
            pod("a", "mem-heavy", node="c", cpu="1", memory="32Gi", start="2026-11-20T11:00:00Z")]  # fmt: skip
    found = _records(nodes, pods)
    price = EC2_HOURLY["m5.4xlarge"]
    assert found["cpu-heavy"]["burn_rate"] == pytest.approx(price * 4 / 16)
    assert found["mem-heavy"]["burn_rate"] == pytest.approx(price * 32 / 64)
    assert found["mem-heavy"]["estimated_cost"] == pytest.approx(price * 0.5 * 1.0)


def test_gke_nodes_are_the_machine_plus_its_gpus_unless_the_machine_includes_them() -> None:
    gcp = ClusterPlace("gke", "gcp", "proj", "us-central1")
    pricer = NodePricer("gcp", "us-central1", gcp=BUNDLED)
    t4 = {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}
    a100 = {"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"}
    nodes = [node("n1", "n1-standard-16", gpus=4, cpu="16", memory="60Gi", labels=t4),
             node("a2", "a2-highgpu-8g", gpus=8, cpu="96", memory="680Gi", labels=a100)]  # fmt: skip
    pods = [pod("r", "t4-job", gpus=4, node="n1", start="2026-11-20T11:00:00Z"),
            pod("r", "a100-job", gpus=8, node="a2", start="2026-11-20T11:00:00Z")]  # fmt: skip
    found = _records(nodes, pods, pricer=pricer, place=gcp)
    n1 = 16 * BUNDLED.vcpu_hour["n1"] + 60 * BUNDLED.gib_hour["n1"] + 4 * BUNDLED.gpu_hour["nvidia-tesla-t4"]
    assert found["t4-job"]["burn_rate"] == pytest.approx(n1)
    assert found["a100-job"]["burn_rate"] == pytest.approx(BUNDLED.machine_hour["a2-highgpu-8g"])
    assert "4 × nvidia-tesla-t4" in found["t4-job"]["cost_method"]


def test_spot_config_prices_and_unpriced_nodes_say_how_they_were_priced() -> None:
    spot = {"eks.amazonaws.com/capacityType": "SPOT"}
    nodes = [node("s", "g5.xlarge", gpus=1, cpu="4", memory="16Gi", labels=spot),
             node("x", "x9.weird", cpu="4", memory="16Gi"),
             node("o", "m5.large", cpu="2", memory="8Gi")]  # fmt: skip
    pods = [pod("a", "on-spot", gpus=1, node="s", start="2026-11-20T11:00:00Z"),
            pod("a", "on-weird", node="x", start="2026-11-20T11:00:00Z", cpu="4"),
            pod("a", "overridden", node="o", start="2026-11-20T11:00:00Z", cpu="2")]  # fmt: skip
    found = _records(nodes, pods, pricer=_pricer(spot_factor=0.4, overrides={"m5.large": 0.05}))
    assert found["on-spot"]["burn_rate"] == pytest.approx(EC2_HOURLY["g5.xlarge"] * 0.4)
    assert "spot node at on-demand × 0.4" in found["on-spot"]["cost_method"]
    assert found["on-weird"]["estimated_cost"] is None and found["on-weird"]["burn_rate"] is None
    assert "no price for x9.weird (set prices:)" in found["on-weird"]["cost_method"]
    assert (
        found["overridden"]["burn_rate"] == pytest.approx(0.05) and "config price" in found["overridden"]["cost_method"]
    )


def test_a_pending_pod_costs_nothing_and_a_deadline_gives_a_projection() -> None:
    started = NOW - timedelta(hours=2)
    nodes = [node("g", "g5.xlarge", gpus=1, cpu="4", memory="16Gi")]
    running = pod(
        "a", "train-0", owner=("Job", "train"), gpus=1, node="g", start=started.strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    waiting = pod("a", "wait", gpus=1, phase="Pending", start=started.strftime("%Y-%m-%dT%H:%M:%SZ"))
    inventory = Inventory(
        nodes={"g": nodes[0]},
        pods=[running, waiting],
        owners={("Job", "a", "train"): {"metadata": {"name": "train", "namespace": "a", "labels": {"owner": "ana"}},
                                        "spec": {"activeDeadlineSeconds": 6 * 3600},
                                        "status": {"startTime": started.strftime("%Y-%m-%dT%H:%M:%SZ")}}},
    )  # fmt: skip
    found = {r["name"]: r for r in workload_records(inventory, AWS, _pricer(), now=NOW, tracked=["Job", "Pod"],
                                                    owner_labels=["owner"])}  # fmt: skip
    price = EC2_HOURLY["g5.xlarge"]
    train = found["train"]
    assert train["estimated_cost"] == pytest.approx(price * 2) and train["projected_cost"] == pytest.approx(price * 6)
    assert (
        train["max_runtime_seconds"] == 6 * 3600 and train["owner"] == "ana" and train["owner_source"] == "label:owner"
    )
    assert found["wait"]["state"] == "PENDING" and found["wait"]["estimated_cost"] == 0.0
    assert "pending" in found["wait"]["cost_method"]
