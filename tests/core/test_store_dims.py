"""``cost_lines`` as a view over ``cost_line_rows`` and ``cost_line_dims`` (migration 0007, issue 17).

Loads write each line's own columns and a ``dim_id``, the columns lines share once per combination;
every reader sees the old table through the view. Existing stores keep every line.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spendwatch.store import SCHEMA_VERSION, Store
from spendwatch.store.lines_file import CostLinesFile, split_columns_sql
from spendwatch.store.schema import COST_LINE_SCHEMA, LINE_DIM_COLUMNS, LINE_ROW_COLUMNS, TAGS_TYPE
from spendwatch.store.snapshots import check_file, restore, take_snapshot
from spendwatch.store.store import _migrations
from tests.doubles.clock import FixedClock
from tests.doubles.lines import cost_lines

NOV = datetime(2026, 11, 1, tzinfo=UTC)
DEC = datetime(2026, 12, 1, tzinfo=UTC)
EVIL = "x'); DROP TABLE cost_line_dims; --"


def lines_with_tags(rows: list[dict[str, Any]]) -> pa.Table:
    """``cost_lines`` with each row's ``tags`` (a list of pairs, or None) as the MAP column."""
    tags = [row.pop("tags", None) for row in rows]
    table = cost_lines(rows)
    return table.set_column(table.schema.get_field_index("tags"), "tags", pa.array(tags, type=TAGS_TYPE))


def varied_lines() -> pa.Table:
    """Lines sharing some dims and not others, with NULLs, tag maps (empty, NULL, several keys) and quotes."""
    rows: list[dict[str, Any]] = []
    for day in range(1, 8):
        for i in range(6):
            rows.append(
                {
                    "day": f"2026-11-{day:02d}",
                    "cost": day * 1.25 + i,
                    "resource_id": f"i-{i:04d}",
                    "sub_account_id": None if i == 5 else f"{111111111111 + i % 2}",
                    "sub_account_name": f"acct {i % 2}",
                    "service_name": ["Amazon EC2", "Amazon S3", EVIL][i % 3],
                    "region_id": None if i % 2 else "us-east-1",
                    "tags": [None, [], [("team", "web")], [("team", "web"), ("env", "prod")], [(EVIL, EVIL)], None][i],
                    "owner": "ann" if i < 3 else None,
                    "list_cost": None if i == 4 else 2.0 * i,
                    "billing_period_start": NOV,
                    "pricing_quantity": float(i),
                    "is_estimated": i == 2,
                }
            )
    return lines_with_tags(rows)


def snapshot(store: Store, where: str = "") -> list[tuple[Any, ...]]:
    return store.query(f"SELECT * EXCLUDE (batch_id) FROM cost_lines {where} ORDER BY ALL")


def split_files(folder: Path, table: pa.Table, *, dims_columns: tuple[str, ...] = LINE_DIM_COLUMNS) -> CostLinesFile:
    """``table`` as the AWS loader hands lines over: each line's own columns + ``dim_id``, and the dims."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("t", table)
    cols = ", ".join(dims_columns)
    con.execute(f"CREATE TABLE d AS SELECT row_number() OVER () * 7 AS dim_id, * FROM (SELECT DISTINCT {cols} FROM t)")
    on = " AND ".join(f"t.{c} IS NOT DISTINCT FROM d.{c}" for c in dims_columns)
    own = [c.name for c in COST_LINE_SCHEMA if c.name not in dims_columns]
    lines, dims = folder / "lines.parquet", folder / "dims.parquet"
    con.execute(f"COPY (SELECT d.dim_id, {', '.join('t.' + c for c in own)} FROM t JOIN d ON {on}) TO '{lines}'")
    con.execute(f"COPY d TO '{dims}'")
    con.close()
    return CostLinesFile(lines, dims)


def test_every_column_is_in_exactly_one_table_and_the_view_is_the_old_table(tmp_path: Path, clock: FixedClock) -> None:
    store = Store(tmp_path / "s.duckdb", clock=clock)
    names = [field.name for field in COST_LINE_SCHEMA]
    assert sorted(LINE_DIM_COLUMNS + LINE_ROW_COLUMNS) == sorted(names)
    described = store.query("DESCRIBE cost_lines")
    assert [row[0] for row in described] == ["source", "batch_id", *names]
    dims = [row[0] for row in store.query("DESCRIBE cost_line_dims")]
    rows = [row[0] for row in store.query("DESCRIBE cost_line_rows")]
    assert dims == ["dim_id", *LINE_DIM_COLUMNS] and rows == ["source", "batch_id", "dim_id", *LINE_ROW_COLUMNS]
    kinds = {row[0]: row[1] for row in described}
    assert kinds["tags"] == "MAP(VARCHAR, VARCHAR)" and kinds["charge_period_start"] == "TIMESTAMP WITH TIME ZONE"
    # The NOT NULL constraints of the old table stay on the tables.
    required = {row[0] for row in store.query("DESCRIBE cost_line_dims") if row[2] == "NO"}
    required |= {row[0] for row in store.query("DESCRIBE cost_line_rows") if row[2] == "NO"}
    assert required == {"dim_id", "source", "batch_id"} | {f.name for f in COST_LINE_SCHEMA if not f.nullable}


def _store_at_version_6(path: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(path))
    con.execute("SET TimeZone = 'UTC'")
    con.execute("CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at TIMESTAMPTZ)")
    for version, sql in _migrations():
        if version <= 6:
            con.execute(sql)
            con.execute("INSERT INTO schema_version VALUES (?, now())", [version])
    return con


def test_migrating_a_version_6_store_keeps_every_line(tmp_path: Path, clock: FixedClock) -> None:
    path = tmp_path / "s.duckdb"
    con = _store_at_version_6(path)
    con.register("incoming", varied_lines())
    con.execute("INSERT INTO cost_lines SELECT 'a', 'batch-a', * FROM incoming")
    con.execute("INSERT INTO cost_lines SELECT 'b', 'batch-b', * FROM incoming WHERE billed_cost > 5")
    con.execute("INSERT INTO cost_lines SELECT 'a', 'batch-a', * FROM incoming LIMIT 3")  # duplicate lines stay
    before = con.execute("SELECT * FROM cost_lines ORDER BY ALL").fetchall()
    described = con.execute("DESCRIBE cost_lines").fetchall()
    con.close()
    store = Store(path, clock=clock)
    assert store.migrate() == SCHEMA_VERSION
    assert store.query("SELECT * FROM cost_lines ORDER BY ALL") == before
    assert [row[:2] for row in store.query("DESCRIBE cost_lines")] == [row[:2] for row in described]
    distinct = store.query(f"SELECT count(*) FROM (SELECT DISTINCT {', '.join(LINE_DIM_COLUMNS)} FROM cost_lines)")
    assert store.query("SELECT count(*) FROM cost_line_dims") == distinct
    # The migrated store loads on as a new one does: the next dims get new ids.
    store.replace_cost_lines("c", NOV, DEC, cost_lines([{"day": "2026-11-02", "cost": 1.0, "owner": "new"}]))
    assert store.query("SELECT count(DISTINCT dim_id) = count(*) FROM cost_line_dims") == [(True,)]
    assert len(snapshot(store)) == len(before) + 1


def test_an_empty_version_6_store_migrates(tmp_path: Path, clock: FixedClock) -> None:
    _store_at_version_6(tmp_path / "s.duckdb").close()
    store = Store(tmp_path / "s.duckdb", clock=clock)
    assert store.migrate() == SCHEMA_VERSION
    assert store.query("SELECT count(*) FROM cost_lines") == [(0,)]


def test_arrow_split_file_and_plain_file_give_the_same_lines(tmp_path: Path, clock: FixedClock) -> None:
    table = varied_lines()
    stores = {name: Store(tmp_path / f"{name}.duckdb", clock=clock) for name in ("arrow", "split", "plain", "odd")}
    stores["arrow"].replace_cost_lines("a", NOV, DEC, table)
    (tmp_path / "split").mkdir()
    split = split_files(tmp_path / "split", table)
    stores["split"].replace_cost_lines("a", NOV, DEC, split)
    pq.write_table(table, tmp_path / "plain.parquet")
    stores["plain"].replace_cost_lines("a", NOV, DEC, CostLinesFile(tmp_path / "plain.parquet"))
    # A split the store does not keep (a per-line column among the dims) goes the general way.
    (tmp_path / "odd").mkdir()
    odd = split_files(tmp_path / "odd", table, dims_columns=(*LINE_DIM_COLUMNS[:10], "resource_name"))
    stores["odd"].replace_cost_lines("a", NOV, DEC, odd)
    with duckdb.connect() as con:
        assert split_columns_sql(con, split) is not None and split_columns_sql(con, odd) is None
    expected = snapshot(stores["arrow"])
    assert len(expected) == table.num_rows
    for name, store in stores.items():
        assert snapshot(store) == expected, name
        distinct = f"SELECT count(*) FROM (SELECT DISTINCT {', '.join(LINE_DIM_COLUMNS)} FROM cost_lines)"
        assert store.query("SELECT count(*) FROM cost_line_dims") == store.query(distinct), name
    # Re-loading the split file replaces the period and adds no dims.
    dims_before = stores["split"].query("SELECT count(*) FROM cost_line_dims")
    result = stores["split"].replace_cost_lines("a", NOV, DEC, split)
    assert result.replaced_rows == table.num_rows and result.rows == table.num_rows
    assert stores["split"].query("SELECT count(*) FROM cost_line_dims") == dims_before
    assert snapshot(stores["split"]) == expected


def test_dims_are_shared_across_loads_and_sources(tmp_path: Path, clock: FixedClock) -> None:
    store = Store(tmp_path / "s.duckdb", clock=clock)
    table = varied_lines()
    store.replace_cost_lines("a", NOV, DEC, table)
    dims = store.query("SELECT * FROM cost_line_dims ORDER BY dim_id")
    store.replace_cost_lines("b", NOV, DEC, table)
    (tmp_path / "f").mkdir()
    store.replace_cost_lines("c", NOV, DEC, split_files(tmp_path / "f", table))
    store.replace_cost_lines("a", NOV, DEC, table)
    assert store.query("SELECT * FROM cost_line_dims ORDER BY dim_id") == dims
    per_source = store.query("SELECT source, count(*), sum(billed_cost) FROM cost_lines GROUP BY 1 ORDER BY 1")
    total = sum(table.column("billed_cost").to_pylist())
    assert [(s, n) for s, n, _ in per_source] == [("a", table.num_rows), ("b", table.num_rows), ("c", table.num_rows)]
    assert all(cost == pytest.approx(total) for _, _, cost in per_source)
    # New combinations get ids after the highest.
    store.replace_cost_lines("d", NOV, DEC, cost_lines([{"day": "2026-11-02", "cost": 1.0, "owner": "zed"}]))
    ids = [row[0] for row in store.query("SELECT dim_id FROM cost_line_dims ORDER BY dim_id")]
    assert ids == list(range(1, len(dims) + 2))


def test_replacing_and_deleting_a_source_leaves_the_others_whole(tmp_path: Path, clock: FixedClock) -> None:
    store = Store(tmp_path / "s.duckdb", clock=clock)
    table = varied_lines()
    store.replace_cost_lines("a", NOV, DEC, table)
    (tmp_path / "f").mkdir()
    store.replace_cost_lines("b", NOV, DEC, split_files(tmp_path / "f", table))
    others = snapshot(store, "WHERE source = 'b'")
    # A smaller restatement, then nothing at all: the dims the old lines used stay, unused and unseen.
    store.replace_cost_lines("a", NOV, DEC, cost_lines([{"day": "2026-11-03", "cost": 3.0, "owner": "solo"}]))
    assert store.query("SELECT count(*), sum(billed_cost) FROM cost_lines WHERE source = 'a'") == [(1, 3.0)]
    result = store.replace_cost_lines("a", NOV, DEC, table.slice(0, 0))
    assert result.replaced_rows == 1
    assert store.query("SELECT count(*) FROM cost_lines WHERE source = 'a'") == [(0,)]
    assert snapshot(store, "WHERE source = 'b'") == others
    # Lines outside the period replaced stay too.
    store.replace_cost_lines("b", DEC, DEC + timedelta(days=31), cost_lines([{"day": "2026-12-03", "cost": 9.0}]))
    assert snapshot(store, "WHERE source = 'b' AND charge_period_start < '2026-12-01'") == others


def test_a_failed_load_leaves_neither_rows_nor_dims(tmp_path: Path, clock: FixedClock) -> None:
    store = Store(tmp_path / "s.duckdb", clock=clock)
    store.replace_cost_lines("a", NOV, DEC, cost_lines([{"day": "2026-11-03", "cost": 5.0}]))
    before = store.query("SELECT count(*) FROM cost_line_dims"), snapshot(store)
    (tmp_path / "f").mkdir()
    bad = cost_lines([{"day": "2026-11-04", "cost": 7.0, "owner": "new"}, {"day": "2026-12-04", "cost": 1.0}])
    with pytest.raises(Exception, match="outside"):
        store.replace_cost_lines("a", NOV, DEC, split_files(tmp_path / "f", bad))
    # A required shared column missing in the dims only shows inside the transaction, after the delete.
    columns = {name: bad.column(name) for name in bad.column_names}
    columns["charge_category"] = pa.array([None, None], type=pa.string())
    schema = pa.schema([f.with_nullable(True) for f in bad.schema])
    sneaky = pa.Table.from_pydict(columns, schema=schema).slice(0, 1)
    with pytest.raises(Exception, match="charge_category"):
        store.replace_cost_lines("a", NOV, DEC, sneaky)
    assert (store.query("SELECT count(*) FROM cost_line_dims"), snapshot(store)) == before


def test_hostile_strings_in_shared_columns_stay_data(tmp_path: Path, clock: FixedClock) -> None:
    hostile = {
        "service_name": EVIL,
        "owner": "Robert'); DROP TABLE cost_line_rows;--",
        "sku_id": 'a" OR "1"="1',
        "tags": [(EVIL, "\\x00 $dims $path"), ("$source", "?")],
        "billing_account_name": "é\u202e\ufeff" * 50,
    }
    table = lines_with_tags([{"day": "2026-11-03", "cost": 1.0, **hostile}, {"day": "2026-11-04", "cost": 2.0}])
    for name in ("arrow", "split"):
        store = Store(tmp_path / f"{name}.duckdb", clock=clock)
        if name == "arrow":
            store.replace_cost_lines("a", NOV, DEC, table)
        else:
            (tmp_path / name).mkdir()
            store.replace_cost_lines("a", NOV, DEC, split_files(tmp_path / name, table))
        row = store.query(
            "SELECT service_name, owner, sku_id, tags, billing_account_name FROM cost_lines WHERE billed_cost = 1"
        )
        assert row == [
            (EVIL, hostile["owner"], hostile["sku_id"], dict(hostile["tags"]), hostile["billing_account_name"])
        ]
        assert store.query("SELECT count(*) FROM cost_lines") == [(2,)]


def test_check_and_restore_carry_the_two_tables(tmp_path: Path, clock: FixedClock) -> None:
    path, folder = tmp_path / "s.duckdb", tmp_path / "snaps"
    store = Store(path, clock=clock)
    store.replace_cost_lines("a", NOV, DEC, varied_lines())
    checked = check_file(path)
    assert checked.ok and checked.rows["cost_lines"] == checked.rows["cost_line_rows"] == varied_lines().num_rows
    assert "cost_lines" in checked.views and " 2 " not in checked.summary()
    take_snapshot(path, folder, clock.now(), keep=2)
    # Newer lines than the snapshot, in new dims: a restore carries them over with their loads.
    store.replace_cost_lines("b", NOV, DEC, cost_lines([{"day": "2026-11-05", "cost": 4.0, "owner": "later"}]))
    latest = snapshot(store)
    result = restore(path, folder, clock.now() + timedelta(hours=1), force=True)
    assert {"cost_line_rows", "cost_line_dims", "loads", "source_state"} <= set(result.salvaged)
    assert "cost_lines" not in result.salvaged and not result.lost
    restored = Store(path, clock=clock)
    assert snapshot(restored) == latest
    assert restored.query("SELECT count(*) FROM loads") == [(2,)]
    assert check_file(path).ok
