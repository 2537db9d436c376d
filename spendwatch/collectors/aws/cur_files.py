"""The export files of one billing period, and what their Parquet metadata tells before any line is read.

``ExportFile`` is a local copy of one file with the S3 key errors name; ``reader_sql`` is how DuckDB
reads it. ``map_keys_of`` reads which keys a tag map holds from its key column's dictionary pages and
``constant_columns`` which text columns hold one value from the footers' statistics, through pyarrow:
a fraction of a DuckDB pass, so the reduction looks up only the spellings present and folds constants.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc


@dataclass(frozen=True)
class ExportFile:
    """A local copy of one export file and the name to use in errors (its S3 key)."""

    path: Path
    label: str

    @property
    def is_parquet(self) -> bool:
        return self.path.name.lower().endswith((".parquet", ".pq"))


def reader_sql(file: ExportFile) -> str:
    path = str(file.path).replace("'", "''")
    if file.is_parquet:
        return f"read_parquet('{path}')"
    return (
        f"read_csv('{path}', header = true, all_varchar = true, compression = 'auto', "
        "quote = '\"', escape = '\"', max_line_size = 8388608)"
    )


def map_keys_of(files: Sequence[ExportFile], column: str) -> set[str] | None:
    """Every key of the MAP ``column`` in these Parquet files, from the key column alone.

    Reading the keys as a dictionary costs a fraction of a DuckDB pass over the whole map (values
    included). ``None`` when the layout is unexpected — every spelling is then looked up, which is
    slower but gives the same result — or a file cannot be read (the scan then names it).
    """
    import pyarrow.parquet as pq

    keys: set[str] = set()
    try:
        for file in files:
            layout = pq.ParquetFile(file.path)
            leaves = [
                layout.schema.column(i).path
                for i in range(len(layout.schema))
                if layout.schema.column(i).path.split(".")[0] == column
            ]
            if len(leaves) != 2 or not leaves[0].endswith(".key"):
                return None
            parquet = pq.ParquetFile(file.path, read_dictionary=[leaves[0]])
            for group in range(parquet.num_row_groups):
                chunked = parquet.read_row_group(group, columns=[leaves[0]]).column(0)
                for chunk in chunked.chunks:
                    found = _leaf_values(chunk)
                    if found is None:
                        return None
                    keys.update(found)
    except (OSError, ValueError, pa.ArrowException):
        return None
    return keys


def constant_columns(files: Sequence[ExportFile], names: Sequence[str]) -> dict[str, str | None]:
    """The string columns among ``names`` that hold one value (or only NULLs) in every row group.

    Read from the Parquet footers' statistics (what every engine trusts for pruning): a column whose
    every row group has ``min == max`` and no NULL, the same value throughout — the payer, the
    currency — or only NULLs — the invoice id of an open month. Truncated statistics of long values
    never have ``min == max``, so they are never taken for constants.
    """
    import pyarrow.parquet as pq

    try:
        footers = [pq.ParquetFile(f.path).metadata for f in files]
    except (OSError, ValueError, pa.ArrowException):
        return {}  # the scan itself names the unreadable file
    groups = [meta.row_group(i) for meta in footers for i in range(meta.num_row_groups)]
    found: dict[str, str | None] = {}
    for name in names:
        values = {_row_group_constant(group, name) for group in groups}
        if len(values) == 1:
            known, value = values.pop()
            if known:
                found[name] = value
    return found


def _row_group_constant(group: Any, name: str) -> tuple[bool, str | None]:
    """(True, the value) when string column ``name`` holds one value, or only NULLs (None), in a row group."""
    for index in range(group.num_columns):
        column = group.column(index)
        if column.path_in_schema != name:
            continue
        stats = column.statistics
        if column.physical_type != "BYTE_ARRAY" or stats is None or not stats.has_null_count:
            return False, None
        if stats.null_count == group.num_rows:
            return True, None
        if stats.null_count == 0 and stats.has_min_max and isinstance(stats.min, str) and stats.min == stats.max:
            return True, stats.min
        return False, None
    return False, None


def _leaf_values(array: pa.Array) -> list[str] | None:
    """The distinct strings at the bottom of a (list of struct of) dictionary/string array."""
    while True:
        if isinstance(array, pa.DictionaryArray):
            # The whole dictionary: a key it holds but no line uses only costs a lookup, never a value.
            return [str(v) for v in array.dictionary.to_pylist()]
        if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
            return [str(v) for v in pc.unique(array.drop_null()).to_pylist()]
        if pa.types.is_list(array.type) or pa.types.is_large_list(array.type) or pa.types.is_map(array.type):
            array = array.flatten()
        elif pa.types.is_struct(array.type) and array.type.num_fields == 1:
            array = array.field(0)
        else:
            return None
