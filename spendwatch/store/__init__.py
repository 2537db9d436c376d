"""The DuckDB store: the file, its numbered migrations, the Arrow schemas and typed records read from it.

``from spendwatch.store import Store`` is the way in; the submodules are ``store`` (connections, locking,
loads), ``lines_file`` (cost lines handed over as a Parquet file), ``schema`` (Arrow schemas of what is
loaded), ``records`` (typed rows read back), ``locks`` (the file locks) and ``cli`` (``spendwatch store
...``). The store imports only ``spendwatch.clock`` and ``spendwatch.errors`` (the CLI also ``cli_util``
and ``snapshots``), never collectors, detect, notify or the daemon.
"""

from spendwatch.store.lines_file import CostLinesFile
from spendwatch.store.store import (
    MEMORY_LIMIT,
    RESTORE_HINT,
    SCHEMA_VERSION,
    Connection,
    LoadResult,
    Store,
    Where,
    check_memory_limit,
    describe_os_error,
    translate_duckdb_error,
)

__all__ = [
    "MEMORY_LIMIT",
    "RESTORE_HINT",
    "SCHEMA_VERSION",
    "Connection",
    "CostLinesFile",
    "LoadResult",
    "Store",
    "Where",
    "check_memory_limit",
    "describe_os_error",
    "translate_duckdb_error",
]
