"""Cost lines written split, as the store keeps them (migration 0007).

``cost_lines`` is a view over ``cost_line_dims`` — the columns lines share, once per combination under
a ``dim_id`` — and ``cost_line_rows``, each line's own columns with its ``dim_id``. Lines come in whole
(an Arrow table, an unsplit file: matched to their dims on every shared column) or already split the
same way (a split ``CostLinesFile``: only the file's few hundred dims are matched, each line carries
its id over). Called inside the store's write transaction.
"""

from __future__ import annotations

from typing import Any

import duckdb

from spendwatch.store.lines_file import CostLinesFile, SplitColumns, new_combinations_sql, quote_name
from spendwatch.store.schema import LINE_DIM_COLUMNS, LINE_ROW_COLUMNS

Connection = duckdb.DuckDBPyConnection

_DIMS = ", ".join(quote_name(name) for name in LINE_DIM_COLUMNS)


def _same_dims(left: str, right: str) -> str:
    """``left``'s row has ``right``'s dims: every shared column equal, NULL matching NULL (MAPs too)."""
    names = [quote_name(n) for n in LINE_DIM_COLUMNS]
    return " AND ".join(f"{left}.{n} IS NOT DISTINCT FROM {right}.{n}" for n in names)


def add_dims(con: Connection, relation: str, params: dict[str, Any]) -> None:
    """Add the combinations of shared columns in ``relation`` that ``cost_line_dims`` lacks, with new ids.

    ``EXCEPT`` compares NULL as a value, so each combination is in ``cost_line_dims`` at most once and
    the joins on it find exactly one row.
    """
    incoming = f"SELECT {_DIMS} FROM {relation} AS incoming"
    con.execute(f"INSERT INTO cost_line_dims {new_combinations_sql('cost_line_dims', incoming, _DIMS)}", params)


def insert_lines(con: Connection, relation: str, params: dict[str, Any], source: str, batch_id: str) -> None:
    """Insert the lines of ``relation`` (``COST_LINE_SCHEMA``'s columns, typed) as dims and rows.

    The general path: every line is matched to its dims row on all the shared columns. Fine for an
    Arrow table or a file of grouped lines; a split file goes through ``insert_split_file``.
    """
    add_dims(con, relation, params)
    rows = ", ".join(f"i.{quote_name(name)}" for name in LINE_ROW_COLUMNS)
    con.execute(
        f"INSERT INTO cost_line_rows SELECT $source, $batch, d.dim_id, {rows} "
        f"FROM {relation} AS i JOIN cost_line_dims AS d ON {_same_dims('i', 'd')}",
        {**params, "source": source, "batch": batch_id},
    )


def insert_split_file(con: Connection, file: CostLinesFile, split: SplitColumns, source: str, batch_id: str) -> None:
    """Insert a split ``CostLinesFile`` keeping its split: the file's dims are matched to the store's
    (a join of two small tables) and each line only carries its store ``dim_id`` over, found by its
    file ``dim_id`` (a BIGINT key) — never a join of millions of lines on thirty columns."""
    dims = f"(SELECT {split.dims} FROM read_parquet($dims))"
    add_dims(con, dims, {"dims": file.params()["dims"]})
    ids = f"SELECT f.dim_id AS file_dim, d.dim_id FROM {dims} AS f JOIN cost_line_dims AS d ON {_same_dims('f', 'd')}"
    con.execute(
        f"INSERT INTO cost_line_rows SELECT $source, $batch, m.dim_id, {split.rows} "
        f"FROM read_parquet($path) AS l JOIN ({ids}) AS m ON l.dim_id = m.file_dim",
        {**file.params(), "source": source, "batch": batch_id},
    )
