"""The grouping pass with per-value keys after the grouping gives exactly the rows of the per-line one.

Costs are multiples of 1/1024 (see test_cur_reduction), so sums in any order compare exactly.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from spendwatch.collectors.aws.cur_files import ExportFile
from spendwatch.collectors.aws.cur_group import grouped_per_value_sql
from spendwatch.collectors.aws.cur_load import CurLoader
from spendwatch.collectors.aws.cur_sql import GROUP_KEYS, GROUP_VALUES, Grain, grouped_sql
from tests.doubles.aws_cur import csv_gz_bytes, cur2_table, line

NOV = datetime(2026, 11, 1, tzinfo=UTC)


def rows() -> list[dict[str, Any]]:
    """Line types that share a charge category, '' beside NULL, several accounts, tags and resources."""
    out = []
    kinds = ["Usage", "DiscountedUsage", "SavingsPlanCoveredUsage", "Fee", "Credit", "odd-Type"]
    for h in range(30):
        for r in range(8):
            out.append(
                line(
                    NOV + timedelta(hours=h % 5),
                    (h + r + 1) / 1024,
                    account=["111111111111", "222222222222", ""][r % 3],
                    kind=kinds[(h + r) % len(kinds)],
                    usage_type=["USE1-BoxUsage:m5.large", ""][r % 2],
                    resource=[f"i-{r % 4:04d}", "", None][r % 3],
                    tags={"user_owner": ["ann", ""][h % 2]} if r % 2 else {},
                )
            )
    return out


def grouped_both(work: Path, file: ExportFile, grain: Grain) -> tuple[list[Any], list[Any]]:
    with CurLoader(tag_keys=["owner"], owner_tags=["owner"], job_tags=[], grain=grain, work_dir=work) as loader:
        scan = loader.scans([file])[0]
        if grain.resources == "top":
            loader._insert(scan, "resource_totals", loader._totals_sql)
            loader.select_top_resources()
        cur, relation = loader._sql(scan)
        per_line = grouped_sql(
            cur.normalised(relation), grain, cur.tag_indices(), top="top_resources", count=True, absent=cur.absent()
        )
        per_value = grouped_per_value_sql(cur, relation, grain, top="top_resources", absent=cur.absent())
        # charge_description is any one line's of the group (``arbitrary``, in both): compared on its own.
        values = [v for v in GROUP_VALUES if v != "charge_description"]
        names = ", ".join([*GROUP_KEYS, *(f"tag_{i}" for i in cur.tag_indices()), *values, "line_items"])
        ordered = f"SELECT {names} FROM ({{}}) ORDER BY ALL"  # by name, as partials are filled
        return loader.con.execute(ordered.format(per_line)).fetchall(), loader.con.execute(
            ordered.format(per_value)
        ).fetchall()


@pytest.mark.parametrize("grain", [Grain(top_resources=2), Grain(period="daily", resources="none")])
@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_keys_computed_per_group_give_the_rows_of_keys_computed_per_line(
    tmp_path: Path, grain: Grain, kind: str
) -> None:
    if kind == "parquet":
        path = tmp_path / "cur.parquet"
        pq.write_table(cur2_table(rows()), path)
    else:
        path = tmp_path / "cur.csv.gz"
        path.write_bytes(csv_gz_bytes(rows()))
    per_line, per_value = grouped_both(tmp_path, ExportFile(path, "s3://b/cur"), grain)
    assert per_value == per_line
    assert len(per_line) > 20  # enough groups that a wrong merge would show
    with CurLoader(tag_keys=[], owner_tags=[], job_tags=[], grain=grain, work_dir=tmp_path) as loader:
        cur, relation = loader._sql(loader.scans([ExportFile(path, "s3://b/cur")])[0])
        sql = grouped_per_value_sql(cur, relation, grain, top="(SELECT NULL AS resource_id)", absent=cur.absent())
        described = {
            row[0] for row in loader.con.execute(f"SELECT DISTINCT charge_description FROM ({sql})").fetchall()
        }
    assert described <= {r["line_item_line_item_description"] for r in rows()}
    # Groups really merged after the grouping: several line types became one charge category.
    assert len({row[GROUP_KEYS.index("charge_category")] for row in per_line}) < len(
        {r["line_item_line_item_type"] for r in rows()}
    )


def test_resources_all_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cur.parquet"
    pq.write_table(cur2_table(rows()[:5]), path)
    with CurLoader(tag_keys=[], owner_tags=[], job_tags=[], grain=Grain(resources="all"), work_dir=tmp_path) as loader:
        cur, relation = loader._sql(loader.scans([ExportFile(path, "x")])[0])
        with pytest.raises(ValueError, match="resources: all"):
            grouped_per_value_sql(cur, relation, Grain(resources="all"), top=None, absent=set())
