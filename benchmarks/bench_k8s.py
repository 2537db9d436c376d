"""The Kubernetes guard poll, measured against the bare cost of listing the cluster's pods.

A cluster in the API server double (``tests/doubles/kubernetes_api.py``, HTTP on 127.0.0.1, in this
process): ``--gpu-nodes`` p4d.24xlarge nodes and ``--cpu-nodes`` m5.4xlarge nodes, a DaemonSet pod on
every node, 8-GPU Jobs of two pods filling the GPU nodes, and small CPU Jobs of ``--cpu-pods`` pods in
all. Timed, the median of ``--runs`` (the server's own work is in every figure alike):

* **baseline** — the live pods listed with the official client as raw JSON and parsed
  (``list_pod_for_all_namespaces(_preload_content=False)`` + ``json.loads``, every page): the least a
  poll can do;
* **models** — the same list deserialized into ``V1Pod`` objects (the client's default), which the
  reader avoids;
* **poll** — one guard poll of the cluster (``guard.k8s_watch.watch_kubernetes``: nodes, pods, Jobs and
  the four CRD lists, requests, node prices, shares, one record per workload).

Printed as seconds and as ratios to the baseline of the same run, with the calls a poll makes.

    python benchmarks/bench_k8s.py [--gpu-nodes 100] [--cpu-nodes 400] [--cpu-pods 3000] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ["NO_PROXY"] = "127.0.0.1,localhost"

from spendwatch.collectors.k8s.jobs import KubernetesJobsConfig
from spendwatch.guard.config import GuardConfig
from spendwatch.guard.k8s_watch import watch_kubernetes
from spendwatch.guard.state import WatchState
from tests.doubles.kubernetes_api import KubernetesApi, job, node, pod

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
LIVE = "status.phase!=Succeeded,status.phase!=Failed"


def build(api: KubernetesApi, gpu_nodes: int, cpu_nodes: int, cpu_pods: int) -> int:
    start = (NOW - timedelta(hours=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    names = [f"gpu-{i:04d}" for i in range(gpu_nodes)] + [f"cpu-{i:04d}" for i in range(cpu_nodes)]
    for name in names[:gpu_nodes]:
        api.add(node(name, "p4d.24xlarge", gpus=8))
    for name in names[gpu_nodes:]:
        api.add(node(name, "m5.4xlarge", cpu="16", memory="64Gi"))
    for name in names:
        api.add(pod("kube-system", f"ds-{name}", owner=("DaemonSet", "aws-node"), node=name, cpu="25m", memory="64Mi"))
    pods = len(names)
    for j in range(gpu_nodes // 2):
        api.add(job("research", f"train-{j}", gpus=8, parallelism=2, labels={"owner": f"u{j % 40}"}, start=start))
        for k in range(2):
            api.add(pod("research", f"train-{j}-{k}", owner=("Job", f"train-{j}"), gpus=8, node=names[2 * j + k],
                        start=start, labels={"owner": f"u{j % 40}"}))  # fmt: skip
            pods += 1
    for p in range(cpu_pods):
        name = f"etl-{p // 3}"
        if p % 3 == 0:
            api.add(job("data", name, labels={"team": "data"}, start=start))
        target = names[gpu_nodes + p % max(cpu_nodes, 1)] if cpu_nodes else names[0]
        api.add(pod("data", f"{name}-{p % 3}", owner=("Job", name), node=target, cpu="500m", memory="1Gi", start=start))
        pods += 1
    return pods


def baseline(api_client: Any) -> int:
    from kubernetes import client

    core, token, count = client.CoreV1Api(api_client), None, 0
    while True:
        extra = {"_continue": token} if token else {}
        answer = core.list_pod_for_all_namespaces(field_selector=LIVE, limit=500, _preload_content=False, **extra)
        page = json.loads(answer.data)
        count += len(page["items"])
        token = page["metadata"].get("continue")
        if not token:
            return count


def models(api_client: Any) -> int:
    from kubernetes import client

    core, token, count = client.CoreV1Api(api_client), None, 0
    while True:
        extra = {"_continue": token} if token else {}
        page = core.list_pod_for_all_namespaces(field_selector=LIVE, limit=500, **extra)
        count += len(page.items)
        token = page.metadata._continue
        if not token:
            return count


def timed(fn: Any, runs: int) -> tuple[float, Any]:
    seconds, result = [], None
    for _ in range(runs):
        began = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - began)
    return statistics.median(seconds), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu-nodes", type=int, default=100)
    parser.add_argument("--cpu-nodes", type=int, default=400)
    parser.add_argument("--cpu-pods", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    api = KubernetesApi().start()
    try:
        pods = build(api, args.gpu_nodes, args.cpu_nodes, args.cpu_pods)
        cluster = {"auth": "none", "server": api.endpoint, "provider": "aws", "account": "123456789012"}
        source = KubernetesJobsConfig.model_validate(
            {"name": "k8s", "type": "kubernetes-jobs", "clusters": {"bench": {**cluster, "region": "us-east-1"}}}
        )
        guard = GuardConfig(rate_limits={"kubernetes:list": 50.0})
        client = api.client()
        base, listed = timed(lambda: baseline(client), args.runs)
        typed, _ = timed(lambda: models(client), args.runs)

        def poll() -> Any:
            return watch_kubernetes(source, guard, WatchState.new(guard), clients={"k8s": client}, now=NOW, store=None)

        before = len(api.requests)
        one = poll()
        calls = len(api.requests) - before
        took, listing = timed(poll, args.runs)
        assert not listing.problems, listing.problems
    finally:
        api.stop()
    print(f"cluster: {args.gpu_nodes + args.cpu_nodes} nodes, {pods} live pods ({listed} listed), "
          f"{len(one.records)} tracked workloads; median of {args.runs}")  # fmt: skip
    print(f"  baseline (raw JSON pod list)   {base:8.3f} s   1.00x")
    print(f"  models (V1Pod objects)         {typed:8.3f} s   {typed / base:5.2f}x")
    print(f"  guard poll ({calls} list calls)   {took:8.3f} s   {took / base:5.2f}x")


if __name__ == "__main__":
    main()
