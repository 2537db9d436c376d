"""CUR 2.0 lines of an EKS cluster with split cost allocation: a GPU node's hours and its pods' shares.

Each hour the p4d node bills its own line; each pod gets a line costing nothing itself
(``line_item_unblended_cost`` 0) with ``split_line_item_split_cost`` (its share) and
``split_line_item_unused_cost`` (its part of the node's idle capacity) and the ``aws:eks:*`` tags and
pod labels EKS imports as cost allocation tags; an EBS volume bills beside them. ``split_table``
adds the ``split_line_item_*`` columns to ``cur2_table``'s.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa

from tests.doubles.aws_cur import cur2_table, line

NODE = "i-0eks000000000gpu1"
PODS = [  # namespace, workload, owner label, share of the node
    ("research", "llm-pretrain-fatima", "fatima.zahra@example.com", 0.7),
    ("serving", "embeddings-api", "mo.ali@example.com", 0.2),
]


def eks_rows(first: datetime, hours: int = 6) -> list[dict[str, Any]]:
    rng = random.Random(16)
    rows = []
    for h in range(hours):
        start = first + timedelta(hours=h)
        node_cost = round(32.7726 * rng.uniform(0.98, 1.0), 6)
        rows.append({**line(start, node_cost, resource=NODE, usage_type="USW2-BoxUsage:p4d.24xlarge",
                            tags={"user_owner": "platform@example.com"}), "split": None})  # fmt: skip
        unused_total = node_cost * 0.1
        for namespace, workload, owner, share in PODS:
            split = round(node_cost * share, 6)
            unused = round(unused_total * share / 0.9, 6)
            tags = {"aws_eks_cluster_name": "eks-ml-train", "aws_eks_namespace": namespace,
                    "aws_eks_workload_name": workload, "aws_eks_workload_type": "Job", "user_owner": owner,
                    "user_team": "ml"}  # fmt: skip
            pod = f"arn:aws:eks:us-west-2:678901234567:pod/eks-ml-train/{namespace}/{workload}-0/uid-{h}"
            rows.append({**line(start, 0.0, resource=pod, usage_type="USW2-EKS-EC2-vCPU-Hours", tags=tags),
                         "split": (NODE, split, unused)})  # fmt: skip
        rows.append({**line(start, 1.5, resource="vol-0abc", usage_type="EBS:VolumeUsage.gp3"), "split": None})
    return rows


def split_table(rows: list[dict[str, Any]]) -> pa.Table:
    base = cur2_table(rows)
    split = [r["split"] for r in rows]
    base = base.append_column("split_line_item_parent_resource_id", pa.array([s and s[0] for s in split], pa.string()))
    base = base.append_column("split_line_item_split_cost", pa.array([s and s[1] for s in split], pa.float64()))
    return base.append_column("split_line_item_unused_cost", pa.array([s and s[2] for s in split], pa.float64()))


def workload_sums(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], float]:
    """Each pod workload's split + unused cost, summed from the rows themselves."""
    out = {}
    for namespace, workload, owner, _ in PODS:
        out[(namespace, workload, owner)] = sum(
            r["split"][1] + r["split"][2] for r in rows if r["split"] and f"/{namespace}/" in r["line_item_resource_id"]
        )
    return out
