"""Cost lines handed to the store as a Parquet file: the same contract as an Arrow table.

Idempotent replacement of [start, end) in one transaction, lines outside the period and bad money
refused before anything is written, a failure half-way leaving the previous data, hostile strings
stored as data.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spendwatch.errors import InputError, StoreError
from spendwatch.store import CostLinesFile, Store
from spendwatch.store import store as store_module
from tests.doubles.clock import FixedClock
from tests.doubles.lines import cost_lines

NOV = datetime(2026, 11, 1, tzinfo=UTC)
DEC = datetime(2026, 12, 1, tzinfo=UTC)


def as_file(folder: Path, table: pa.Table, name: str = "lines.parquet") -> CostLinesFile:
    path = folder / name
    pq.write_table(table, path)
    return CostLinesFile(path)


def with_column(table: pa.Table, name: str, values: list[Any]) -> pa.Table:
    """``table`` with column ``name`` set to ``values`` as given (the double's rows turn NaN into null)."""
    index = table.schema.get_field_index(name)
    return table.set_column(index, table.schema.field(index), pa.array(values, type=table.schema.field(index).type))


def total(store: Store, source: str = "a") -> float:
    return float(store.query("SELECT coalesce(sum(billed_cost), 0) FROM cost_lines WHERE source = ?", [source])[0][0])


def stored(store: Store) -> list[tuple[Any, ...]]:
    return store.query("SELECT * EXCLUDE (batch_id) FROM cost_lines ORDER BY ALL")


def test_a_file_stores_exactly_what_the_same_table_stores(tmp_path: Path, clock: FixedClock) -> None:
    table = cost_lines(
        [
            {"day": "2026-11-03", "cost": 10.0, "owner": "ann", "list_cost": 12.0},
            {"day": "2026-11-04", "cost": 20.0, "resource_id": "i-1", "is_estimated": True},
        ]
    )
    table = with_column(table, "tags", [[("owner", "ann"), ("team", "")], None])
    by_table, by_file = Store(tmp_path / "t.duckdb", clock=clock), Store(tmp_path / "f.duckdb", clock=clock)
    from_table = by_table.replace_cost_lines("a", NOV, DEC, table, fingerprint="x")
    from_file = by_file.replace_cost_lines("a", NOV, DEC, as_file(tmp_path, table), fingerprint="x")
    assert stored(by_file) == stored(by_table)
    assert (from_file.rows, from_file.billed_total) == (from_table.rows, from_table.billed_total) == (2, 30.0)
    loads = "SELECT * EXCLUDE (batch_id) FROM loads"
    assert by_file.query(loads) == by_table.query(loads)


def as_split_files(folder: Path, table: pa.Table, shared: list[str]) -> CostLinesFile:
    """``table`` as two files, ``shared`` columns once per distinct combination (``CostLinesFile.dims``)."""
    keys = [repr([row[name] for name in shared]) for row in table.select(shared).to_pylist()]
    ids = {key: number for number, key in enumerate(dict.fromkeys(keys))}
    dim_ids = pa.array([ids[key] for key in keys], type=pa.int64())
    first = [keys.index(key) for key in ids]  # a row of each combination
    pq.write_table(table.drop_columns(shared).append_column("dim_id", dim_ids), folder / "rows.parquet")
    dims = table.select(shared).take(first).append_column("dim_id", pa.array(list(ids.values()), type=pa.int64()))
    pq.write_table(dims, folder / "dims.parquet")
    return CostLinesFile(folder / "rows.parquet", folder / "dims.parquet")


def test_lines_split_over_a_dims_file_store_what_the_joined_table_stores(tmp_path: Path, clock: FixedClock) -> None:
    rows = [
        {"day": "2026-11-03", "cost": 10.0, "owner": "ann", "resource_id": "i-1"},
        {"day": "2026-11-03", "cost": 2.5, "owner": "ann", "resource_id": "i-2"},
        {"day": "2026-11-04", "cost": 20.0, "owner": "bob", "resource_id": "i-1", "sub_account_id": "2222"},
        {"day": "2026-11-05", "cost": 1.0, "resource_id": None},
    ]
    table = with_column(cost_lines(rows), "tags", [[("owner", "ann")], [("owner", "ann")], None, None])
    shared = ["provider", "sub_account_id", "service_name", "charge_category", "billing_currency", "tags", "owner"]
    folder = tmp_path / "it's $dims"
    folder.mkdir()
    split = as_split_files(folder, table, shared)
    assert pq.read_table(split.dims).num_rows == 3  # ann's two lines share one row
    by_table, by_files = Store(tmp_path / "t.duckdb", clock=clock), Store(tmp_path / "f.duckdb", clock=clock)
    by_table.replace_cost_lines("a", NOV, DEC, table)
    assert by_files.replace_cost_lines("a", NOV, DEC, split).rows == 4
    assert stored(by_files) == stored(by_table)

    # The checks read the joined lines: bad money is refused naming the hour, nothing is written.
    bad = as_split_files(folder, with_column(table, "billed_cost", [10.0, 2.5, math.inf, 1.0]), shared)
    with pytest.raises(InputError, match=r"billed_cost is inf on a line of 2026-11-04 00:00 UTC"):
        by_files.replace_cost_lines("a", NOV, DEC, bad)
    assert total(by_files) == 33.5


def test_missing_nullable_columns_are_null_and_a_missing_required_one_is_named(
    tmp_path: Path, clock: FixedClock
) -> None:
    store = Store(tmp_path / "s.duckdb", clock=clock)
    table = cost_lines([{"day": "2026-11-03", "cost": 4.0}]).drop_columns(["tags", "owner", "publisher_name"])
    store.replace_cost_lines("a", NOV, DEC, as_file(tmp_path, table))
    assert store.query("SELECT billed_cost, tags, owner, publisher_name FROM cost_lines") == [(4.0, None, None, None)]
    with pytest.raises(ValueError, match="required column 'billed_cost' is missing"):
        store.replace_cost_lines("a", NOV, DEC, as_file(tmp_path, table.drop_columns(["billed_cost"]), "b.parquet"))
    assert total(store) == 4.0


def test_reloading_a_file_replaces_the_period_and_never_double_counts(tmp_path: Path, clock: FixedClock) -> None:
    store = Store(tmp_path / "s.duckdb", clock=clock)
    first = as_file(tmp_path, cost_lines([{"day": "2026-11-03", "cost": 10.0}, {"day": "2026-11-04", "cost": 20.0}]))
    store.replace_cost_lines("a", NOV, DEC, first)
    store.replace_cost_lines("a", NOV, DEC, first)
    store.replace_cost_lines("b", NOV, DEC, first)
    restated = as_file(tmp_path, cost_lines([{"day": "2026-11-03", "cost": 12.5}]), "restated.parquet")
    result = store.replace_cost_lines("a", NOV, DEC, restated)
    assert (result.replaced_rows, result.rows) == (2, 1)
    assert (total(store, "a"), total(store, "b")) == (12.5, 30.0)


def test_lines_outside_the_period_are_refused_before_anything_is_written(tmp_path: Path, clock: FixedClock) -> None:
    store = Store(tmp_path / "s.duckdb", clock=clock)
    store.replace_cost_lines("a", NOV, DEC, cost_lines([{"day": "2026-11-03", "cost": 5.0}]))
    stray = cost_lines([{"day": "2026-11-03", "cost": 1.0}, {"day": "2026-12-02", "cost": 1.0}])
    with pytest.raises(StoreError, match=r"lines from 2026-11-03 00:00 to 2026-12-02 00:00 fall outside the period"):
        store.replace_cost_lines("a", NOV, DEC, as_file(tmp_path, stray))
    assert total(store) == 5.0


@pytest.mark.parametrize(
    ("column", "value", "shown"), [("billed_cost", math.inf, "inf"), ("list_cost", math.nan, "NaN")]
)
def test_money_that_is_not_a_finite_amount_is_refused_naming_column_and_hour(
    tmp_path: Path, clock: FixedClock, column: str, value: float, shown: str
) -> None:
    store = Store(tmp_path / "s.duckdb", clock=clock)
    store.replace_cost_lines("a", NOV, DEC, cost_lines([{"day": "2026-11-03", "cost": 5.0}]))
    bad = cost_lines([{"day": "2026-11-04", "cost": 1.0}, {"day": "2026-11-05", "cost": 2.0}])
    bad = with_column(bad, column, [1.0, value])
    with pytest.raises(InputError, match=rf"source a: {column} is {shown} on a line of 2026-11-05 00:00 UTC"):
        store.replace_cost_lines("a", NOV, DEC, as_file(tmp_path, bad))
    assert total(store) == 5.0


def test_a_required_column_holding_nulls_is_refused_before_anything_is_written(
    tmp_path: Path, clock: FixedClock
) -> None:
    store = Store(tmp_path / "s.duckdb", clock=clock)
    store.replace_cost_lines("a", NOV, DEC, cost_lines([{"day": "2026-11-03", "cost": 5.0}]))
    bad = cost_lines([{"day": "2026-11-04", "cost": 7.0}])
    schema = pa.schema([f.with_nullable(True) for f in bad.schema])
    sneaky = bad.cast(schema).set_column(0, schema.field(0), pa.array([None], type=pa.string()))
    with pytest.raises(ValueError, match="column 'provider' has 1 empty value"):
        store.replace_cost_lines("a", NOV, DEC, as_file(tmp_path, sneaky))
    assert total(store) == 5.0


def test_an_insert_failing_half_way_rolls_the_whole_period_back(
    tmp_path: Path, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path / "s.duckdb", clock=clock)
    store.replace_cost_lines("a", NOV, DEC, cost_lines([{"day": "2026-11-03", "cost": 5.0}]))
    good = as_file(tmp_path, cost_lines([{"day": "2026-11-04", "cost": 7.0}]))

    def failing(con: Any, file: CostLinesFile) -> list[str]:
        # The checks passed; the insert fails after the DELETE ran (a full disk, a damaged page).
        exprs = list(real(con, file))
        exprs[-1] = "CAST(error('disk gave up') AS VARCHAR)"
        return exprs

    real = store_module.columns_sql
    monkeypatch.setattr(store_module, "columns_sql", failing)
    with pytest.raises(Exception, match="disk gave up"):
        store.replace_cost_lines("a", NOV, DEC, good)
    assert total(store) == 5.0
    assert store.query("SELECT count(*) FROM loads")[0][0] == 1


def test_hostile_strings_and_paths_are_data(tmp_path: Path, clock: FixedClock) -> None:
    store = Store(tmp_path / "s.duckdb", clock=clock)
    evil = "x'); DROP TABLE cost_lines; --"
    folder = tmp_path / "it's $path"
    folder.mkdir()
    table = cost_lines([{"day": "2026-11-03", "cost": 1.0, "resource_id": evil}])
    table = with_column(table, "tags", [[(evil, "$1 ?")]])
    store.replace_cost_lines(evil, NOV, DEC, as_file(folder, table, "l'ines.parquet"))
    assert store.query("SELECT source, resource_id, tags FROM cost_lines") == [(evil, evil, {evil: "$1 ?"})]


def test_the_store_keeps_neither_the_file_nor_itself_open(tmp_path: Path, clock: FixedClock) -> None:
    store = Store(tmp_path / "s.duckdb", clock=clock)
    lines = as_file(tmp_path, cost_lines([{"day": "2026-11-03", "cost": 1.0}]))
    store.replace_cost_lines("a", NOV, DEC, lines)
    # Another writer gets the store at once: no connection was left open.
    Store(tmp_path / "s.duckdb", clock=clock, lock_timeout=0).replace_cost_lines("b", NOV, DEC, lines)
    lines.path.unlink()  # the collector's scratch folder can go right after
    assert (total(store), total(store, "b")) == (1.0, 1.0)
