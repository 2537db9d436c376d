"""The CUR reduction at its edges: many files per period, several schemas, bad files, spilling, tags.

Costs in these tests are multiples of 1/1024, so any summation order gives the same float and
results can be compared for exact equality.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from spendwatch.collect import collect_source
from spendwatch.collectors.aws import cur_load as aws_cur_load
from spendwatch.collectors.aws.cur import DataExportConfig
from spendwatch.collectors.aws.cur_files import ExportFile, constant_columns, map_keys_of
from spendwatch.collectors.aws.cur_load import CurLoader
from spendwatch.collectors.aws.cur_sql import Grain, SqlParams, grouped_sql
from spendwatch.errors import InputError
from spendwatch.store import Store
from spendwatch.store.schema import COST_LINE_SCHEMA
from tests.doubles.aws_cur import bulk_cur2_table, csv_gz_bytes, cur2_table, line, put_data_export
from tests.doubles.clock import FixedClock

NOV = datetime(2026, 11, 1, tzinfo=UTC)
DEC = datetime(2026, 12, 1, tzinfo=UTC)
TAGS = ["owner", "team"]


def mixed_rows() -> list[dict[str, Any]]:
    """Three accounts, usage and fees and credits, owners and teams, the same keys in many hours."""
    rows = []
    for h in range(48):
        start = NOV + timedelta(hours=h)
        for r in range(6):
            tags = {"user_owner": f"p{r % 3}@example.com"} | ({"user_team": "data"} if r % 2 else {})
            account = f"{111111111111 * (1 + r % 3)}"
            rows.append(line(start, (h % 7 + r + 1) / 64, account=account, resource=f"i-{r:04d}", tags=tags))
        rows.append(line(start, -1 / 32, kind="Credit", resource=None))
    rows.append(line(NOV, 12.5, kind="Tax", resource=None, hours=24 * 30))
    rows.append(line(NOV, 3.25, kind="RIFee", resource=None, hours=24 * 30))
    return rows


def write(folder: Path, name: str, table: pa.Table) -> ExportFile:
    path = folder / name
    pq.write_table(table, path, row_group_size=max(1, table.num_rows // 4))
    return ExportFile(path, f"s3://bucket/data/{name}")


def reduce(files: list[ExportFile], work: Path, grain: Grain | None = None, **options: Any) -> list[tuple[Any, ...]]:
    """The lines a loader makes of ``files``, as sorted comparable tuples (maps as sorted items)."""
    with CurLoader(
        tag_keys=TAGS, owner_tags=["owner"], job_tags=[], grain=grain or Grain(), work_dir=work, **options
    ) as loader:
        loader.load(files)
        loader.finish(NOV, DEC)
        tables = [table for _, _, table in loader.batches(NOV, DEC)]
    rows = pa.concat_tables(tables).to_pylist()
    lines = [row_tuple(r) for r in rows]
    return sorted(lines, key=lambda values: tuple((v is None, v if v is not None else 0) for v in values))


def row_tuple(row: dict[str, Any]) -> tuple[Any, ...]:
    """A stored line as a comparable tuple (the tags map as sorted items)."""
    return tuple(tuple(sorted(row[k])) if k == "tags" and row[k] else row[k] for k in row)


def split(rows: list[dict[str, Any]], parts: int) -> list[list[dict[str, Any]]]:
    return [rows[i::parts] for i in range(parts)]


def test_a_period_split_across_many_files_and_schemas_gives_the_lines_of_one_file(tmp_path: Path) -> None:
    rows = mixed_rows()
    one = reduce([write(tmp_path, "one.parquet", cur2_table(rows))], tmp_path)

    many = [write(tmp_path, f"part-{i:02d}.parquet", cur2_table(part)) for i, part in enumerate(split(rows, 9))]
    assert reduce(many, tmp_path) == one

    # Files with different columns are separate scans (one has no Savings Plan column, one an extra
    # column), plus a gzip CSV: the partials of every scan merge into the same lines.
    parts = split(rows, 4)
    mixed = [
        write(tmp_path, "a.parquet", cur2_table(parts[0]).drop_columns(["savings_plan_savings_plan_effective_cost"])),
        write(tmp_path, "b.parquet", cur2_table(parts[1]).append_column("x", pa.array([1] * len(parts[1])))),
        write(tmp_path, "c.parquet", cur2_table(parts[2])),
    ]
    (tmp_path / "d.csv.gz").write_bytes(csv_gz_bytes(parts[3]))
    mixed.append(ExportFile(tmp_path / "d.csv.gz", "s3://bucket/data/d.csv.gz"))
    assert reduce(mixed, tmp_path) == one


def test_resources_all_grouped_on_dimension_ids_gives_the_rows_of_the_wide_grouping(tmp_path: Path) -> None:
    # resources: all groups on (hour, resource, dim_id) with the keys stored once per combination
    # (cur_dims); resources: top with room for every resource groups on the keys themselves (cur_group)
    # and keeps every id too: two independent groupings that must give the same lines.
    rows = mixed_rows()
    rows += [
        line(NOV - timedelta(hours=2), 1.5, resource="i-0000", tags={"user_owner": "p0@example.com"}),  # clamped in
        line(NOV, 0.75, account="", usage_type="", resource=""),  # empty keys are NULL keys
        line(NOV, 0.25, resource=None, tags={"user_team": "data"}),
    ]
    parts = split(rows, 3)
    files = [
        write(tmp_path, "a.parquet", cur2_table(parts[0]).drop_columns(["savings_plan_savings_plan_effective_cost"])),
        write(tmp_path, "b.parquet", cur2_table(parts[1])),
    ]
    (tmp_path / "c.csv.gz").write_bytes(csv_gz_bytes(parts[2]))  # tags as JSON text: another scan
    files.append(ExportFile(tmp_path / "c.csv.gz", "s3://bucket/data/c.csv.gz"))

    every = reduce(files, tmp_path, Grain(resources="all"))
    assert every == reduce(files, tmp_path, Grain(resources="top", top_resources=1_000_000))
    assert len(every) > 100 and any(row[2] is None for row in every)  # a NULL account among the rows

    # One scan is grouped straight into the lines file when no line is clamped into the period, and
    # through the narrow table, merged, when one is (the clamped line shares its key with another).
    for name, part in (("inside.parquet", rows[:-3]), ("clamped.parquet", rows)):
        single = [write(tmp_path, name, cur2_table(part))]
        assert reduce(single, tmp_path, Grain(resources="all")) == reduce(
            single, tmp_path, Grain(resources="top", top_resources=1_000_000)
        )

    # Rows grouped elsewhere (the Athena pushdown) join the local ones by their keys.
    with CurLoader(
        tag_keys=TAGS, owner_tags=["owner"], job_tags=[], grain=Grain(resources="all"), work_dir=tmp_path
    ) as loader:
        scans = loader.scans(files)
        loader.load([files[0]])
        cur, relation = loader._sql(scans[1])
        wide = grouped_sql(cur.normalised(relation), loader.grain, cur.tag_indices(), count=True, absent=cur.absent())
        loader.add_partials(loader.con.sql(wide).to_arrow_table())
        loader.load([files[2]])
        loader.finish(NOV, DEC)
        pushed = pa.concat_tables([table for _, _, table in loader.batches(NOV, DEC)]).to_pylist()
    assert sorted(map(repr, every)) == sorted(repr(row_tuple(row)) for row in pushed)


def test_files_with_the_same_columns_are_read_in_one_scan(tmp_path: Path) -> None:
    rows = mixed_rows()
    files = [write(tmp_path, f"p{i}.parquet", cur2_table(part)) for i, part in enumerate(split(rows, 5))]
    files.append(write(tmp_path, "other.parquet", cur2_table(rows[:3]).drop_columns(["product"])))
    with CurLoader(tag_keys=TAGS, owner_tags=["owner"], job_tags=[], grain=Grain(), work_dir=tmp_path) as loader:
        scans = loader.scans(files)
    assert [len(scan.files) for scan in scans] == [5, 1]
    assert "read_parquet([" in scans[0].reader


def test_top_resources_are_ranked_over_the_whole_period_not_per_file(tmp_path: Path) -> None:
    # i-big is the most expensive resource of the month but never the most expensive of one file.
    files = []
    for day in range(4):
        rows = [line(NOV + timedelta(days=day), 1.0, resource="i-big")]
        rows.append(line(NOV + timedelta(days=day, hours=1), 1.5, resource=f"i-once{day}"))
        files.append(write(tmp_path, f"d{day}.parquet", cur2_table(rows)))
    lines = reduce(files, tmp_path, Grain(resources="top", top_resources=1))
    kept = {row[8] for row in lines if row[8] is not None}  # resource_id
    assert kept == {"i-big"}
    assert sum(row[15] for row in lines) == 4 * 1.0 + 4 * 1.5  # billed_cost: the tail is folded, not lost


@pytest.mark.parametrize("grain", [Grain(), Grain(resources="all")], ids=["top", "all"])
def test_a_corrupt_file_among_many_is_named_by_its_s3_key(tmp_path: Path, grain: Grain) -> None:
    # With resources: all the lines are grouped in finish (straight into the file): named there too.
    rows = mixed_rows()
    files = [write(tmp_path, f"part-{i}.parquet", cur2_table(part)) for i, part in enumerate(split(rows, 4))]
    data = bytearray(files[2].path.read_bytes())
    middle = len(data) // 3
    data[middle : middle + 400] = b"\x5a" * 400  # a damaged data page; the footer still reads
    files[2].path.write_bytes(bytes(data))

    with pytest.raises(InputError) as raised:
        reduce(files, tmp_path, grain)

    message = str(raised.value)
    assert message.startswith("s3://bucket/data/part-2.parquet: ")
    assert "\n" not in message and str(tmp_path) not in message


def test_a_bad_cost_met_while_grouping_into_the_lines_file_names_the_file(tmp_path: Path) -> None:
    # resources: all, one scan: its keys are read in load, its costs only when finish groups the lines
    # straight into the file; the error there names the S3 object as a load error would.
    (tmp_path / "c.csv.gz").write_bytes(csv_gz_bytes(mixed_rows(), broken_cost_at=2))
    files = [ExportFile(tmp_path / "c.csv.gz", "s3://bucket/data/c.csv.gz")]
    with CurLoader(
        tag_keys=TAGS, owner_tags=["owner"], job_tags=[], grain=Grain(resources="all"), work_dir=tmp_path
    ) as loader:
        loader.load(files)
        with pytest.raises(InputError) as raised:
            loader.finish(NOV, DEC)
    message = str(raised.value)
    assert message.startswith("s3://bucket/data/c.csv.gz: ") and "'12,5 USD'" in message
    assert "\n" not in message and str(tmp_path) not in message
    assert sorted(path.name for path in tmp_path.iterdir() if path.suffix == ".parquet") == []  # nothing left


def test_a_truncated_file_is_named_before_anything_is_read(tmp_path: Path) -> None:
    files = [write(tmp_path, f"part-{i}.parquet", cur2_table(part)) for i, part in enumerate(split(mixed_rows(), 3))]
    files[1].path.write_bytes(files[1].path.read_bytes()[:100])
    with pytest.raises(InputError, match=r"^s3://bucket/data/part-1.parquet: cannot read the file: "):
        reduce(files, tmp_path)


def test_tag_keys_are_read_from_the_map_key_column(tmp_path: Path) -> None:
    table = cur2_table(mixed_rows())
    file = write(tmp_path, "a.parquet", table)
    assert map_keys_of([file], "resource_tags") == {"user_owner", "user_team"}
    assert map_keys_of([file], "product") == {"product_name", "region"}
    assert map_keys_of([file], "line_item_resource_id") is None  # not a map: every spelling is looked up


def test_lines_are_the_same_whether_or_not_the_tag_keys_were_found_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = mixed_rows()
    # Owner spelled three ways in three files: every spelling must be looked up where it occurs.
    spellings = ["user_owner", "user:owner", "owner"]
    for index, row in enumerate(rows):
        if "user_owner" in row["resource_tags"]:
            value = row["resource_tags"].pop("user_owner")
            row["resource_tags"][spellings[index % 3]] = value
    files = [write(tmp_path, f"p{i}.parquet", cur2_table(part)) for i, part in enumerate(split(rows, 3))]
    found = reduce(files, tmp_path)

    monkeypatch.setattr(aws_cur_load, "map_keys_of", lambda *_: None)
    assert reduce(files, tmp_path) == found
    owners = {row[COST_LINE_SCHEMA.names.index("owner")] for row in found}
    assert owners == {"p0@example.com", "p1@example.com", "p2@example.com", None}


def test_constant_columns_are_read_from_parquet_statistics(tmp_path: Path) -> None:
    rows = mixed_rows()
    for row in rows:
        row["product_region_code"] = ""  # constant, but empty: a NULL region
    table = cur2_table(rows)
    a = write(tmp_path, "a.parquet", table)
    found = constant_columns([a], ["bill_payer_account_id", "bill_invoice_id", "product_region_code"])
    assert found == {"bill_payer_account_id": "999999999999", "bill_invoice_id": None, "product_region_code": ""}
    assert "line_item_usage_account_id" not in constant_columns([a], ["line_item_usage_account_id"])

    other = cur2_table(rows).set_column(0, "bill_payer_account_id", pa.array(["888888888888"] * len(rows)))
    b = write(tmp_path, "b.parquet", other)
    assert constant_columns([a, b], ["bill_payer_account_id", "bill_invoice_id"]) == {"bill_invoice_id": None}


def test_lines_are_the_same_whether_or_not_constant_columns_were_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = mixed_rows()
    for index, row in enumerate(rows):
        row["product_region_code"] = ""
        row["bill_invoice_id"] = "INV-1" if index % 2 else None
    parts = split(rows, 3)
    files = [write(tmp_path, f"p{i}.parquet", cur2_table(part)) for i, part in enumerate(parts)]
    payer = cur2_table(parts[0]).set_column(0, "bill_payer_account_id", pa.array(["888888888888"] * len(parts[0])))
    files.append(write(tmp_path, "other-payer.parquet", payer))
    found = reduce(files, tmp_path)
    one_payer = reduce(files[:3], tmp_path)  # the payer is a constant of this scan

    monkeypatch.setattr(aws_cur_load, "constant_columns", lambda *_: {})
    assert reduce(files, tmp_path) == found
    assert reduce(files[:3], tmp_path) == one_payer
    assert {row[1] for row in found} == {"999999999999", "888888888888"}  # billing_account_id
    assert {row[7] for row in found} == {None}  # region_id: '' is no region
    estimated = COST_LINE_SCHEMA.names.index("is_estimated")
    assert {row[estimated] for row in found} == {True, False}  # lines with and without an invoice


def test_lines_starting_before_the_period_are_clamped_into_it_and_merged(tmp_path: Path) -> None:
    rows = [
        line(NOV - timedelta(hours=1), 2.0, resource="i-a"),  # AWS books a few such lines into the month
        line(NOV, 3.0, resource="i-a"),
    ]
    lines = reduce([write(tmp_path, "a.parquet", cur2_table(rows))], tmp_path)
    assert [(row[13], row[15]) for row in lines] == [(NOV, 5.0)]  # charge_period_start, billed_cost


def test_a_million_distinct_resources_spill_to_disk_within_the_memory_limit(tmp_path: Path) -> None:
    lines = 1_000_000
    table = bulk_cur2_table(lines, resources=lines, month=NOV)
    file = write(tmp_path, "big.parquet", table)
    total = pc.sum(table.column("line_item_unblended_cost")).as_py()

    grain = Grain(resources="all")
    with CurLoader(
        tag_keys=TAGS, owner_tags=["owner"], job_tags=[], grain=grain, work_dir=tmp_path, memory_limit="192MB"
    ) as loader:
        loader.load([file])
        assert not list(tmp_path.glob("spill-*"))  # the lines are grouped in finish, straight into the file
        assert loader.finish(NOV, DEC) == lines
        # More than the limit was needed: DuckDB made its spill folder and wrote there instead of failing.
        assert [path for folder in tmp_path.glob("spill-*") for path in folder.iterdir()]
        batches = list(loader.batches(NOV, DEC))
    assert max(t.num_rows for _, _, t in batches) <= 250_000 + lines // 30 + 1  # whole days, never the month
    assert sum(t.num_rows for _, _, t in batches) == lines
    assert sum(pc.sum(t.column("billed_cost")).as_py() for _, _, t in batches) == total

    top = reduce([file], tmp_path, Grain(resources="top", top_resources=1000), memory_limit="192MB")
    ids = table.column("line_item_resource_id")
    costs = table.column("line_item_unblended_cost").to_numpy()
    order = np.lexsort((np.array(ids.to_pylist()), -costs))  # cost descending, then id, as spendwatch ranks
    expected = {ids[int(i)].as_py() for i in order[:1000]}
    assert {row[8] for row in top if row[8] is not None} == expected
    assert sum(row[15] for row in top) == total


def test_sql_params_bind_in_the_order_the_placeholders_appear() -> None:
    params = SqlParams()
    late, early = params.text("late"), params.text("ear'ly")
    limit = params.mark("10")
    sql, values = params.bind(f"SELECT {early}, {late} FROM t WHERE a = {early} LIMIT {limit}")
    assert sql == "SELECT ?, ? FROM t WHERE a = ? LIMIT ?"
    assert values == ["'ear''ly'", "'late'", "'ear''ly'", "10"]


@pytest.fixture
def s3(moto_server: Any) -> Any:
    import boto3

    client = boto3.client("s3", endpoint_url=moto_server.endpoint_url, region_name="us-east-1")
    client.create_bucket(Bucket="billing")
    return client


def test_a_period_of_twelve_files_in_s3_stores_what_one_file_stores(
    moto_server: Any, s3: Any, tmp_path: Path, clock: FixedClock, clients: dict[str, Any]
) -> None:
    rows = mixed_rows()
    put_data_export(s3, "billing", "one/cur2", "2026-11", {"all.parquet": _parquet(cur2_table(rows))})
    parts = {f"cur2-{i:05d}.snappy.parquet": _parquet(cur2_table(p)) for i, p in enumerate(split(rows, 12))}
    put_data_export(s3, "billing", "many/cur2", "2026-11", parts)

    stores = []
    for prefix in ("one/cur2", "many/cur2"):
        store = Store(tmp_path / f"{prefix.split('/')[0]}.duckdb", clock=clock)
        source = DataExportConfig.model_validate(
            {
                "name": "cur",
                "bucket": "billing",
                "prefix": prefix,
                "keep_tags": ["team"],
                "aws": {"region": "us-east-1", "endpoint_url": moto_server.endpoint_url},
            }
        )
        run = collect_source(source, store, clock, clients=clients)
        assert run.ok, run.error or run.problems
        assert run.counters["aws_cur_line_items"] == len(rows)
        stores.append(store.query("SELECT * EXCLUDE (batch_id) FROM cost_lines ORDER BY ALL"))
    assert stores[0] == stores[1]
    assert len(stores[0]) > 48


def _parquet(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return bytes(sink.getvalue().to_pybytes())
