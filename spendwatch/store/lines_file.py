"""Cost lines handed to the store as a Parquet file, read by the store's own DuckDB.

A collector that already reduced its lines in DuckDB (``aws-data-export``) writes them to one Parquet
file and hands over a ``CostLinesFile``: the store inserts the whole period with one ``INSERT ...
SELECT`` from ``read_parquet``, so a 20M-line month never passes through Arrow, and the checks an
Arrow table gets from ``conform`` and ``Store.replace_cost_lines`` — required columns present and
filled, every line inside the period, money finite — run as one aggregate over the file before the
store is even opened. The file's strings are data read by DuckDB, never SQL text; its path is a
parameter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from spendwatch.errors import InputError
from spendwatch.store.schema import COST_LINE_SCHEMA, LINE_DIM_COLUMNS, LINE_ROW_COLUMNS, MAX_AMOUNT

MONEY = ("billed_cost", "effective_cost", "list_cost")


JOINED = "(SELECT * EXCLUDE (dim_id) FROM read_parquet({lines}) JOIN read_parquet({dims}) USING (dim_id))"
"""Lines split over two files (``CostLinesFile.dims``), joined back; ``{lines}``/``{dims}`` are SQL strings."""


def new_combinations_sql(table: str, incoming: str, names: str) -> str:
    """Rows for ``INSERT INTO table``: the combinations ``incoming`` has and ``table`` lacks, each with a
    new ``dim_id`` after the table's highest.

    ``incoming`` is a query whose columns are ``names`` (a select list of ``table``'s columns), in order.
    ``EXCEPT`` compares NULL as a value and drops duplicates, so each combination is in ``table`` at
    most once and a NULL-safe join on ``names`` finds exactly one row. The collector's ``dims`` and the
    store's ``cost_line_dims`` are kept this way.
    """
    return (
        f"SELECT (SELECT coalesce(max(dim_id), 0) FROM {table}) + row_number() OVER () AS dim_id, * "
        f"FROM ({incoming} EXCEPT SELECT {names} FROM {table}) AS fresh"
    )


@dataclass(frozen=True)
class CostLinesFile:
    """A Parquet file of cost lines: ``COST_LINE_SCHEMA``'s columns by name (missing nullable ones are NULL).

    With ``dims``, the lines are split over two files: ``path`` holds each line's own columns and a
    ``dim_id``, ``dims`` one row per ``dim_id`` with the columns its lines share (keys, tags, owner):
    a month with every resource kept repeats a few hundred key combinations over millions of lines,
    and writing them once is most of what the split saves. The lines are the join on ``dim_id``; the
    store keeps them split the same way (``cost_line_rows`` / ``cost_line_dims``, ``split_columns_sql``).

    The files must stay unchanged until ``Store.replace_cost_lines`` returns (a collector's own
    scratch folder); the store only reads them.
    """

    path: Path
    dims: Path | None = None

    def relation(self) -> str:
        """SQL of the lines, the paths as the parameters ``params`` gives (never in the SQL text)."""
        if self.dims is None:
            return "read_parquet($path)"
        return JOINED.format(lines="$path", dims="$dims")

    def params(self) -> dict[str, str]:
        return {"path": str(self.path)} | ({} if self.dims is None else {"dims": str(self.dims)})


@dataclass(frozen=True)
class FileSummary:
    """What the checks learn about a file: enough for the load record and the error messages."""

    rows: int
    first_start: datetime | None
    last_start: datetime | None
    data_end: datetime | None
    billed_total: float


def _duck_type(kind: pa.DataType) -> str:
    if pa.types.is_map(kind):
        return "MAP(VARCHAR, VARCHAR)"
    if pa.types.is_timestamp(kind):
        return "TIMESTAMPTZ"
    if pa.types.is_floating(kind):
        return "DOUBLE"
    if pa.types.is_boolean(kind):
        return "BOOLEAN"
    if pa.types.is_string(kind):
        return "VARCHAR"
    raise TypeError(f"no DuckDB type for {kind}")  # a new schema column needs its mapping here


def quote_name(name: str) -> str:
    """A column name of the store's own schema as a SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def named(exprs: list[str]) -> str:
    """``columns_sql``'s expressions as a select list, each named after its ``COST_LINE_SCHEMA`` column."""
    return ", ".join(f"{expr} AS {quote_name(f.name)}" for expr, f in zip(exprs, COST_LINE_SCHEMA, strict=True))


def columns_sql(con: duckdb.DuckDBPyConnection, file: CostLinesFile) -> list[str]:
    """One expression per ``COST_LINE_SCHEMA`` column, in its order, over ``file.relation()``.

    Like ``conform``: present columns are cast to the schema's type, missing nullable ones are NULL,
    a missing required one is a ``ValueError`` naming it.
    """
    present = _present(con, file.relation(), file.params())
    return [_typed(field, present) for field in COST_LINE_SCHEMA]


def _present(con: duckdb.DuckDBPyConnection, relation: str, params: dict[str, str]) -> set[str]:
    described = con.execute(f"DESCRIBE SELECT * FROM {relation}", params).fetchall()
    return {str(row[0]) for row in described}


def _typed(field: pa.Field, present: set[str], alias: str = "") -> str:
    kind = _duck_type(field.type)
    if field.name in present:
        return f"CAST({alias}{quote_name(field.name)} AS {kind})"
    if field.nullable:
        return f"CAST(NULL AS {kind})"
    raise ValueError(f"required column {field.name!r} is missing")


@dataclass(frozen=True)
class SplitColumns:
    """A split file's columns as the store keeps them (``LINE_DIM_COLUMNS`` / ``LINE_ROW_COLUMNS``).

    ``dims``: ``dim_id`` and the shared columns, typed, over ``read_parquet($dims)``; ``rows``: the
    line's own columns, typed, over ``read_parquet($path) AS l``.
    """

    dims: str
    rows: str


def split_columns_sql(con: duckdb.DuckDBPyConnection, file: CostLinesFile) -> SplitColumns | None:
    """How to insert ``file`` keeping its split, or ``None`` when it is not split the store's way.

    The store can take a file's dims as its own when the dims file holds only shared columns (besides
    ``dim_id``) and the lines file none of them: then lines with one file ``dim_id`` share every
    shared column. Any other file is inserted as its joined lines.
    """
    if file.dims is None:
        return None
    fields = {field.name: field for field in COST_LINE_SCHEMA}
    in_dims = _present(con, "read_parquet($dims)", {"dims": str(file.dims)}) - {"dim_id"}
    in_rows = _present(con, "read_parquet($path)", {"path": str(file.path)}) - {"dim_id"}
    shared = set(LINE_DIM_COLUMNS)
    if not in_dims <= shared or in_rows & shared:
        return None
    dims = ", ".join(f"{_typed(fields[n], in_dims)} AS {quote_name(n)}" for n in LINE_DIM_COLUMNS)
    rows = ", ".join(_typed(fields[n], in_rows, "l.") for n in LINE_ROW_COLUMNS)
    return SplitColumns(f"CAST(dim_id AS BIGINT) AS dim_id, {dims}", rows)


def summarise(file: CostLinesFile, source: str) -> FileSummary:
    """Check ``file`` the way an Arrow table is checked, in one pass; raises before anything is written.

    ``ValueError`` for a required column holding NULLs (as ``conform``), ``InputError`` for money that
    is not a finite amount (as ``Store.replace_cost_lines``). Runs in its own in-memory DuckDB, so the
    store's exclusive lock is not held while the file is read.
    """
    with duckdb.connect(":memory:") as con:
        con.execute("SET TimeZone = 'UTC'")
        typed = named(columns_sql(con, file))
        required = [field.name for field in COST_LINE_SCHEMA if not field.nullable]
        checks = [
            "count(*)",
            "min(charge_period_start)",
            "max(charge_period_start)",
            "max(charge_period_end)",
            "coalesce(sum(billed_cost), 0)",
            *(f"count(*) FILTER (WHERE {quote_name(name)} IS NULL)" for name in required),
            *(f"count(*) FILTER (WHERE NOT {_finite(name)})" for name in MONEY),
        ]
        source_sql = f"(SELECT {typed} FROM {file.relation()}) AS lines"
        params = file.params()
        row = con.execute(f"SELECT {', '.join(checks)} FROM {source_sql}", params).fetchone()
        assert row is not None  # an aggregate always has a row
        nulls = dict(zip(required, row[5 : 5 + len(required)], strict=True))
        for name, count in nulls.items():
            if count:
                raise ValueError(f"column {name!r} has {count} empty value(s)")
        for name, count in zip(MONEY, row[5 + len(required) :], strict=True):
            if count:
                value, when = _first_bad(con, source_sql, params, name)
                raise bad_amount_error(source, name, value, when)
    return FileSummary(int(row[0]), row[1], row[2], row[3], float(row[4]))


def bad_amount_error(source: str, name: str, value: Any, when: datetime) -> InputError:
    """Infinite or NaN money would poison every sum (a digest once said "month to date -$inf")."""
    shown = "NaN" if isinstance(value, float) and math.isnan(value) else f"{value}"
    return InputError(
        f"source {source}: {name} is {shown} on a line of {when:%Y-%m-%d %H:%M} UTC; money must be a "
        "finite amount below 1e15, so nothing of this period was stored"
    )


def _finite(name: str) -> str:
    # NULL is fine here (list_cost may be absent); NaN and ±inf are not finite.
    return f"coalesce(isfinite({quote_name(name)}) AND abs({quote_name(name)}) < {MAX_AMOUNT:.0f}, true)"


def _first_bad(con: duckdb.DuckDBPyConnection, source_sql: str, params: dict[str, Any], name: str) -> tuple[Any, Any]:
    found = con.execute(
        f"SELECT {quote_name(name)}, charge_period_start FROM {source_sql} WHERE NOT {_finite(name)} "
        "ORDER BY charge_period_start LIMIT 1",
        params,
    ).fetchone()
    assert found is not None  # the count said there is one
    return found[0], found[1]
