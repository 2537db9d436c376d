"""EKS split cost allocation through aws-data-export's reduction: CUR 2.0 files with split_line_item_*
columns and aws:eks:* / pod-label tags, generated here, reduced by the real DuckDB path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spendwatch.collectors.aws.cur import DataExportConfig
from spendwatch.collectors.aws.cur_files import ExportFile
from spendwatch.collectors.aws.cur_load import CurLoader
from spendwatch.collectors.aws.cur_sql import Grain
from tests.doubles.aws_cur import cur2_table
from tests.doubles.aws_cur_eks import NODE, PODS, split_table
from tests.doubles.aws_cur_eks import eks_rows as eks_cluster_rows

NOV, DEC = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)


def eks_rows(hours: int = 6) -> list[dict[str, Any]]:
    return eks_cluster_rows(NOV + timedelta(days=3), hours)


def reduce(tmp_path: Path, rows: list[dict[str, Any]], grain: Grain) -> pa.Table:
    path = tmp_path / "eks.parquet"
    pq.write_table(split_table(rows), path, row_group_size=7)
    config = DataExportConfig.model_validate(
        {"name": "cur", "bucket": "bill", "kubernetes": {"keep_labels": ["team"]}, "owner_tags": ["owner"]}
    )
    with CurLoader(
        tag_keys=config.stored_tags(), owner_tags=config.owner_tags, job_tags=[], grain=grain,
        work_dir=tmp_path, k8s=config.k8s_columns(),
    ) as loader:  # fmt: skip
        loader.load([ExportFile(path, "s3://bill/eks.parquet")])
        loader.finish(NOV, DEC)
        return pa.concat_tables([t for _, _, t in loader.batches(NOV, DEC)])


@pytest.mark.parametrize("resources", ["all", "top", "none"])
def test_pods_carry_their_share_of_the_node_and_totals_stay_the_bills(tmp_path: Path, resources: str) -> None:
    rows = eks_rows()
    lines = reduce(tmp_path, rows, Grain(period="hourly", resources=resources, top_resources=3)).to_pylist()

    billed = sum(r["line_item_unblended_cost"] for r in rows)
    assert sum(r["billed_cost"] for r in lines) == pytest.approx(billed, abs=1e-6)  # the export's own sum
    by_workload: dict[Any, float] = {}
    for r in lines:
        key = (r["k8s_cluster"], r["k8s_namespace"], r["k8s_workload"], r["owner"])
        by_workload[key] = by_workload.get(key, 0.0) + r["billed_cost"]
    for namespace, workload, owner, _ in PODS:
        expected = sum(
            r["split"][1] + r["split"][2] for r in rows if r["split"] and f"/{namespace}/" in r["line_item_resource_id"]
        )
        assert by_workload[("eks-ml-train", namespace, workload, owner)] == pytest.approx(expected)
    node_left = sum(r["line_item_unblended_cost"] for r in rows if r["line_item_resource_id"] == NODE) - sum(
        r["split"][1] + r["split"][2] for r in rows if r["split"]
    )
    untagged = sum(v for (cluster, *_), v in by_workload.items() if cluster is None)
    assert untagged == pytest.approx(node_left + 1.5 * 6)  # the node keeps what no pod used; the volume its own
    assert {r["tags"] and dict(r["tags"]).get("k8s-label/team") for r in lines if r["k8s_namespace"]} == {"ml"}


def test_a_cur_without_split_columns_is_read_as_before(tmp_path: Path) -> None:
    rows = [r for r in eks_rows() if r["split"] is None]
    path = tmp_path / "plain.parquet"
    pq.write_table(cur2_table(rows), path)
    with CurLoader(tag_keys=["owner"], owner_tags=["owner"], job_tags=[], grain=Grain(resources="all"),
                   work_dir=tmp_path) as loader:  # fmt: skip
        loader.load([ExportFile(path, "s3://bill/plain.parquet")])
        loader.finish(NOV, DEC)
        lines = pa.concat_tables([t for _, _, t in loader.batches(NOV, DEC)]).to_pylist()
    assert sum(r["billed_cost"] for r in lines) == pytest.approx(sum(r["line_item_unblended_cost"] for r in rows))
    assert {r["k8s_cluster"] for r in lines} == {None}
