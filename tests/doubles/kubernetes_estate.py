"""Two clusters for the Kubernetes source and guard tests, loaded into the API server double.

``eks_cluster(api, started=…)`` — EKS ``eks-ml-train`` (account 678901234567, us-west-2):

* two ``p4d.24xlarge`` GPU nodes (8 GPUs each, nodegroup ``gpu-p4d``) running fatima's forgotten
  16-GPU Job ``research/llm-pretrain-fatima`` (one 8-GPU pod on each);
* a ``g5.xlarge`` node (1 GPU) with chen's bare notebook pod ``research/stray-notebook`` holding its GPU;
* an ``m5.4xlarge`` node with a CronJob's run ``data/feature-backfill-29001`` (2 CPU, 8 GiB, owner
  label ``team``), the Deployment ``serving/embeddings-api`` (not tracked by default) and a
  ``kube-system`` DaemonSet pod on every node (excluded namespace).

``gke_cluster(api, started=…)`` — GKE ``gke-research`` (project ml-gke-research, us-central1):

* an ``a2-highgpu-8g`` node (its 8 A100s are in the machine price) with the worker of divya's forgotten
  8-GPU RayCluster ``research/ray-dev``, whose head runs on an ``n1-standard-16`` + 4 × T4 node;
* a RayJob ``research/sweep-7`` whose RayCluster ``sweep-7-raycluster`` runs one 4-T4 worker on a second
  ``n1-standard-16`` + 4 × T4 node (the pods belong to the RayJob);
* a PyTorchJob ``research/ddp-bert`` pending (no node yet: nothing billed).

Prices are the bundled tables' (EC2 on-demand us-east-1; Compute Engine us-central1), so the
expected figures below are computed from those tables, not copied from the code under test.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from spendwatch.collectors.aws.prices import EC2_HOURLY
from spendwatch.collectors.gcp.prices import BUNDLED
from tests.doubles.kubernetes_api import KubernetesApi, deployment, job, node, pod, pytorch_job, ray_cluster, ray_job

EKS = "eks-ml-train"
EKS_ACCOUNT = "678901234567"
GKE = "gke-research"
GKE_PROJECT = "ml-gke-research"
FATIMA = "fatima.zahra@example.com"
DIVYA = "divya.rao@example.com"
CHEN = "chen.wei@example.com"

P4D = EC2_HOURLY["p4d.24xlarge"]
G5 = EC2_HOURLY["g5.xlarge"]
M5 = EC2_HOURLY["m5.4xlarge"]
A2 = BUNDLED.machine_hour["a2-highgpu-8g"]
N1_T4 = 16 * BUNDLED.vcpu_hour["n1"] + 60 * BUNDLED.gib_hour["n1"] + 4 * BUNDLED.gpu_hour["nvidia-tesla-t4"]


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _ds_pod(node_name: str) -> dict[str, object]:
    return pod("kube-system", f"aws-node-{node_name}", owner=("DaemonSet", "aws-node"), node=node_name, cpu="25m",
               memory="64Mi")  # fmt: skip


def eks_cluster(api: KubernetesApi, started: datetime) -> None:
    """The EKS estate; the GPU Job and the notebook started at ``started``, the backfill an hour later."""
    at = rfc3339(started)
    nodegroup = {"eks.amazonaws.com/nodegroup": "gpu-p4d", "eks.amazonaws.com/capacityType": "ON_DEMAND"}
    for name in ("gpu-a", "gpu-b"):
        api.add(node(name, "p4d.24xlarge", gpus=8, labels=nodegroup))
        api.add(_ds_pod(name))
    api.add(node("gpu-small", "g5.xlarge", gpus=1, cpu="4", memory="16Gi"))
    api.add(node("cpu-1", "m5.4xlarge", cpu="16", memory="64Gi"))
    labels = {"owner": FATIMA, "team": "ml-research"}
    api.add(job("research", "llm-pretrain-fatima", gpus=8, parallelism=2, labels=labels, start=at))
    for i, name in enumerate(("gpu-a", "gpu-b")):
        api.add(pod("research", f"llm-pretrain-fatima-{i}", owner=("Job", "llm-pretrain-fatima"), gpus=8, node=name,
                    labels={**labels, "job-name": "llm-pretrain-fatima"}, start=at, cpu="48", memory="500Gi"))  # fmt: skip
    api.add(pod("research", "stray-notebook", gpus=1, node="gpu-small", labels={"owner": CHEN}, start=at, cpu="2",
                memory="8Gi"))  # fmt: skip
    later = rfc3339(started + timedelta(hours=1))
    api.add(job("data", "feature-backfill-29001", labels={"team": "data-platform"}, start=later,
                cronjob="feature-backfill", deadline=4 * 3600))  # fmt: skip
    api.add(pod("data", "feature-backfill-29001-x7k2p", owner=("Job", "feature-backfill-29001"), node="cpu-1",
                labels={"team": "data-platform"}, start=later, cpu="2", memory="8Gi"))  # fmt: skip
    api.add(deployment("serving", "embeddings-api", replicas=1, labels={"owner": "mo.ali@example.com"}))
    api.add(pod("serving", "embeddings-api-5d9f8c-abcde", owner=("ReplicaSet", "embeddings-api-5d9f8c"), node="cpu-1",
                labels={"app": "embeddings-api", "pod-template-hash": "5d9f8c"}, start=at, cpu="4", memory="8Gi"))  # fmt: skip
    api.add(_ds_pod("cpu-1"))


def gke_cluster(api: KubernetesApi, started: datetime) -> None:
    """The GKE estate; every workload started at ``started``."""
    at = rfc3339(started)
    pool = {"cloud.google.com/gke-nodepool": "a100-pool", "cloud.google.com/gke-accelerator": "nvidia-tesla-a100"}
    api.add(node("gke-a100-1", "a2-highgpu-8g", gpus=8, cpu="96", memory="680Gi", zone="us-central1-a", labels=pool))
    t4 = {"cloud.google.com/gke-nodepool": "t4-pool", "cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}
    for name in ("gke-t4-1", "gke-t4-2"):
        api.add(node(name, "n1-standard-16", gpus=4, cpu="16", memory="60Gi", zone="us-central1-a", labels=t4))
    labels = {"owner": DIVYA, "team": "ml-research", "ray.io/cluster": "ray-dev"}
    api.add(ray_cluster("research", "ray-dev", labels={"owner": DIVYA, "team": "ml-research"}, start=at))
    api.add(pod("research", "ray-dev-head-0", owner=("RayCluster", "ray-dev"), node="gke-t4-1", labels=labels,
                start=at, cpu="4", memory="15Gi"))  # fmt: skip
    api.add(pod("research", "ray-dev-worker-gpu-0", owner=("RayCluster", "ray-dev"), gpus=8, node="gke-a100-1",
                labels=labels, start=at, cpu="90", memory="600Gi"))  # fmt: skip
    api.add(ray_job("research", "sweep-7", labels={"owner": DIVYA}))
    api.add(ray_cluster("research", "sweep-7-raycluster", owner="sweep-7", start=at))
    api.add(pod("research", "sweep-7-worker-0", owner=("RayCluster", "sweep-7-raycluster"), gpus=4, node="gke-t4-2",
                labels={"ray.io/cluster": "sweep-7-raycluster"}, start=at, cpu="8", memory="30Gi"))  # fmt: skip
    api.add(pytorch_job("research", "ddp-bert", labels={"owner": "erik.lund@example.com"}))
    api.add(pod("research", "ddp-bert-master-0", owner=("PyTorchJob", "ddp-bert"), gpus=4, phase="Pending",
                labels={"owner": "erik.lund@example.com"}, start=at))  # fmt: skip
