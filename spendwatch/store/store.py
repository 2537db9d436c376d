"""The embedded store: one DuckDB file holding cost lines, jobs, anomalies, actions, runs, digests.

Why DuckDB: cost lines are columnar facts scanned by group-bys, and DuckDB reads Arrow and Parquet
natively, so loading and series queries run at column speed. Its limit is one writing process per
file; spendwatch works with it instead of around it: no process keeps the file open. Each unit of
work takes ``flock`` (shared to read, exclusive to write — see ``spendwatch.store.locks``), connects, runs in one
transaction and closes. Network calls and model fitting happen outside that window, so the CLI can
list anomalies or approve an action while the daemon runs, waiting at most for one short write.

Loading is idempotent by construction: ``replace_cost_lines`` deletes the rows of one source and
period and inserts the new ones in the same transaction, so re-loading restated data never counts
twice and a load that fails half-way leaves the previous data intact.
"""

from __future__ import annotations

import errno
import json
import re
import uuid
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from spendwatch.clock import Clock, SystemClock, ensure_utc
from spendwatch.errors import (
    ConfigError,
    StoreAccessError,
    StoreBusyError,
    StoreDamagedError,
    StoreError,
)
from spendwatch.store.lines_file import (
    MONEY,
    CostLinesFile,
    bad_amount_error,
    columns_sql,
    named,
    split_columns_sql,
    summarise,
)
from spendwatch.store.locks import LockTimeout, RWFileLock
from spendwatch.store.schema import (
    COST_LINE_SCHEMA,
    JOB_SCHEMA,
    MAX_AMOUNT,
    conform,
)
from spendwatch.store.split_lines import insert_lines, insert_split_file

Connection = duckdb.DuckDBPyConnection


def _migrations() -> list[tuple[int, str]]:
    found = []
    for entry in resources.files("spendwatch.store.migrations").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), entry.read_text(encoding="utf-8")))
    return sorted(found)


SCHEMA_VERSION = max(version for version, _ in _migrations())

# DuckDB's memory_limit: a size with a unit, or a share of RAM. It is handed to DuckDB as a connection
# setting, never formatted into SQL, and checked here as well as at config load.
MEMORY_LIMIT = re.compile(r"^\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB|%)$")

# What DuckDB says when the file itself is the problem, and what it means for the user.
_DAMAGE = ("corrupt", "checksum", "could not read enough bytes", "not a valid duckdb database", "truncated")
_FULL = ("no space left", "file too large", "disk quota", "file size limit")
_DENIED = ("permission denied", "read-only file system")
RESTORE_HINT = "`spendwatch store check` says what is wrong; `spendwatch store restore` brings back the last snapshot"


def check_memory_limit(value: str) -> str:
    """``value`` if it is a memory size DuckDB accepts (``512MB``, ``1.5GiB``, ``50%``), else ``ValueError``."""
    match = MEMORY_LIMIT.match(value)
    if not match or float(match.group(0).rstrip("KMGTiB% ")) <= 0:
        shown = repr(value) if len(value) <= 60 else repr(value[:57]) + "..."
        raise ValueError(f"{shown} is not a memory size; use e.g. 512MB, 2GB, 1.5GiB or 50%")
    if value.endswith("%") and float(value[:-1]) > 100:
        raise ValueError(f"{value!r} is more than all the memory there is; use at most 100%")
    return value


def describe_os_error(exc: OSError, fallback: Path) -> str:
    """One line for a file-system refusal: what is in the way, and where."""
    target = exc.filename or fallback
    if isinstance(exc, IsADirectoryError):
        return f"{target} is a folder where spendwatch needs a file"
    if isinstance(exc, FileExistsError | NotADirectoryError):
        return f"a file is in the way of the folder {target}"
    if isinstance(exc, PermissionError):
        return f"permission denied on {target} (spendwatch needs to write in its folder)"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return f"no space left writing {target} (a full disk or a file-size limit)"
    if exc.errno == errno.EROFS:
        return f"{target} is on a read-only file system"
    return f"{exc.strerror or type(exc).__name__} ({target})"


def translate_duckdb_error(exc: Exception, path: Path) -> StoreError | None:
    """A user-fixable ``StoreError`` for DuckDB errors about the file itself; ``None`` for other errors."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    lowered = text.lower()
    if any(word in lowered for word in _FULL):
        return StoreAccessError(
            f"store {path}: no space left (a full disk or a file-size limit): {text}; the write was rolled "
            "back and the previous data is intact: free some space and run again"
        )
    if any(word in lowered for word in _DAMAGE):
        return StoreDamagedError(f"store {path} is damaged ({text}); {RESTORE_HINT}")
    if any(word in lowered for word in _DENIED):
        return StoreAccessError(f"store {path}: {text} (spendwatch needs to read and write the file and its folder)")
    if "could not set lock" in lowered or "conflicting lock" in lowered:
        return StoreBusyError(f"store {path} is open in another program (not spendwatch): {text}")
    return None


@dataclass(frozen=True)
class LoadResult:
    source: str
    period_start: datetime
    period_end: datetime
    batch_id: str
    rows: int
    replaced_rows: int
    billed_total: float


@dataclass(frozen=True)
class _Load:
    """One replacement of a source's period, as the ``loads`` table records it."""

    source: str
    start: datetime
    end: datetime
    batch_id: str
    rows: int
    billed_total: float
    data_end: datetime | None
    fingerprint: str | None


class Store:
    """A spendwatch store file. Cheap to construct; every method opens and closes its own connection."""

    def __init__(
        self,
        path: Path,
        *,
        lock_timeout: float = 60.0,
        clock: Clock | None = None,
        memory_limit: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.lock_timeout = lock_timeout
        self.clock: Clock = clock or SystemClock()
        if memory_limit is not None:
            try:
                check_memory_limit(memory_limit)
            except ValueError as exc:
                raise ConfigError(f"store.memory_limit: {exc}") from None
        self.memory_limit = memory_limit
        self._lock = RWFileLock(self.path.with_name(self.path.name + ".lock"))
        self._migrated = False

    # -- connections -------------------------------------------------------------------------

    @contextmanager
    def _connect(self, *, write: bool) -> Iterator[Connection]:
        if not self._migrated:
            self.migrate()
        with self._open(write=write) as con:
            yield con

    @contextmanager
    def _open(self, *, write: bool) -> Iterator[Connection]:
        with ExitStack() as stack:
            self._hold_lock(stack, write)
            con = self._connect_file(write)
            stack.callback(self._close, con)
            try:
                con.execute("SET TimeZone = 'UTC'")
                yield con
            except duckdb.Error as exc:
                # A damaged file or a full disk surfaces in whatever query touches it: one line for the user.
                translated = translate_duckdb_error(exc, self.path)
                if translated is None:
                    raise
                raise translated from exc

    def _hold_lock(self, stack: ExitStack, write: bool) -> None:
        try:
            stack.enter_context(self._lock.hold(exclusive=write, timeout=self.lock_timeout))
        except LockTimeout:
            raise StoreBusyError(
                f"store {self.path} is busy: another spendwatch process held it for more than "
                f"{self.lock_timeout:g}s (raise store.lock_timeout if this persists)"
            ) from None
        except OSError as exc:
            raise StoreAccessError(f"store {self.path}: {describe_os_error(exc, self._lock.path)}") from None

    def _connect_file(self, write: bool) -> Connection:
        settings: dict[str, str | bool | int | float | list[str]] = {}
        if self.memory_limit:
            settings["memory_limit"] = self.memory_limit
        try:
            return duckdb.connect(str(self.path), read_only=not write, config=settings)
        except duckdb.Error as exc:
            translated = translate_duckdb_error(exc, self.path)
            raise (translated or StoreError(f"cannot open store {self.path}: {exc}")) from exc

    def _close(self, con: Connection) -> None:
        try:
            con.close()  # may checkpoint the write-ahead log into the file: a full disk shows here too
        except duckdb.Error as exc:
            translated = translate_duckdb_error(exc, self.path)
            if translated is None:
                raise
            raise translated from exc

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only connection, shared with other readers."""
        with self._connect(write=False) as con:
            yield con

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """An exclusive connection inside one transaction: committed on success, rolled back on error."""
        with self._connect(write=True) as con:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    # -- schema ----------------------------------------------------------------------------------

    def migrate(self) -> int:
        """Create the file if needed and apply pending migrations; returns the schema version."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreAccessError(f"store {self.path}: {describe_os_error(exc, self.path.parent)}") from None
        if self.path.is_dir():
            raise StoreAccessError(f"store {self.path} is a folder; store.path must name a file")
        self._drop_empty_file()
        if self.path.exists() and self._current_version() == SCHEMA_VERSION:
            # Up to date: no exclusive lock, and nothing written (a damaged file is never made worse).
            self._migrated = True
            return SCHEMA_VERSION
        with self._open(write=True) as con:
            con.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied_at TIMESTAMPTZ)")
            row = con.execute("SELECT max(version) FROM schema_version").fetchone()
            current = int(row[0]) if row and row[0] is not None else 0
            if current > SCHEMA_VERSION:
                raise StoreAccessError(
                    f"store {self.path} has schema version {current}, newer than this spendwatch "
                    f"({SCHEMA_VERSION}); upgrade spendwatch"
                )
            for version, sql in _migrations():
                if version <= current:
                    continue
                con.execute("BEGIN TRANSACTION")
                try:
                    con.execute(sql)
                    con.execute("INSERT INTO schema_version VALUES (?, ?)", [version, self.clock.now()])
                except duckdb.Error as exc:
                    con.execute("ROLLBACK")
                    raise StoreError(f"migration {version:04d} failed on {self.path}: {exc}") from exc
                con.execute("COMMIT")
                current = version
        self._migrated = True
        return current

    def _drop_empty_file(self) -> None:
        """A zero-byte file holds nothing (a process stopped before DuckDB wrote its header): start afresh."""
        if not self.path.exists() or self.path.stat().st_size:
            return
        with ExitStack() as stack:
            self._hold_lock(stack, True)  # nobody is creating it right now
            if self.path.exists() and self.path.stat().st_size == 0:
                self.path.unlink()

    def _current_version(self) -> int | None:
        with self._open(write=False) as con:
            found = con.execute(
                "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
                "AND table_name = 'schema_version'"
            ).fetchone()
            if not found or not found[0]:
                return None
            row = con.execute("SELECT max(version) FROM schema_version").fetchone()
        return int(row[0]) if row and row[0] is not None else None

    def schema_version(self) -> int:
        with self.read() as con:
            row = con.execute("SELECT max(version) FROM schema_version").fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    # -- cost lines ------------------------------------------------------------------------------

    def replace_cost_lines(
        self,
        source: str,
        period_start: datetime,
        period_end: datetime,
        lines: pa.Table | CostLinesFile,
        *,
        fingerprint: str | None = None,
    ) -> LoadResult:
        """Replace every cost line of ``source`` whose charge period starts in [start, end).

        ``lines`` is an Arrow table, or a Parquet file the store's DuckDB reads straight in (a large
        reduction's whole month without passing through Arrow; see ``spendwatch.store.lines_file``).
        They must lie inside the period (a line outside it would escape the next replace and be
        counted twice); that is checked before anything is written.
        """
        start, end = ensure_utc(period_start), ensure_utc(period_end)
        if isinstance(lines, CostLinesFile):
            return self._replace_from_file(source, start, end, lines, fingerprint)
        table = conform(lines, COST_LINE_SCHEMA)
        _check_inside_period(table, start, end, source)
        _check_finite(table, source)
        billed_total = float(pc.sum(table.column("billed_cost")).as_py() or 0.0)
        data_end = pc.max(table.column("charge_period_end")).as_py() if table.num_rows else None
        load = _Load(source, start, end, uuid.uuid4().hex[:16], table.num_rows, billed_total, data_end, fingerprint)
        with self.transaction() as con:
            replaced = self._delete_period(con, load)
            con.register("incoming_lines", table)
            insert_lines(con, "incoming_lines", {}, source, load.batch_id)
            con.unregister("incoming_lines")
            self._record_load(con, load)
        return LoadResult(source, start, end, load.batch_id, table.num_rows, replaced, billed_total)

    def _replace_from_file(
        self, source: str, start: datetime, end: datetime, file: CostLinesFile, fingerprint: str | None
    ) -> LoadResult:
        """``replace_cost_lines`` for a Parquet file: checked first, then one INSERT ... SELECT in the transaction."""
        summary = summarise(file, source)
        if summary.first_start is not None and summary.last_start is not None:
            _refuse_outside(summary.first_start, summary.last_start, start, end, source)
        load = _Load(
            source, start, end, uuid.uuid4().hex[:16], summary.rows, summary.billed_total, summary.data_end, fingerprint
        )
        with self.transaction() as con:
            replaced = self._delete_period(con, load)
            split = split_columns_sql(con, file)
            if split is not None:
                insert_split_file(con, file, split, source, load.batch_id)
            else:
                typed = named(columns_sql(con, file))
                insert_lines(con, f"(SELECT {typed} FROM {file.relation()})", file.params(), source, load.batch_id)
            self._record_load(con, load)
        return LoadResult(source, start, end, load.batch_id, summary.rows, replaced, summary.billed_total)

    @staticmethod
    def _delete_period(con: Connection, load: _Load) -> int:
        """Delete ``load``'s source and period; returns how many lines it held."""
        # Only the lines go: their dims rows stay, and may be used by no line any more, which is
        # harmless (the view's inner join never shows them; the next load reuses them if they come back).
        where = "source = ? AND charge_period_start >= ? AND charge_period_start < ?"
        params = [load.source, load.start, load.end]
        replaced = _count(con, f"SELECT count(*) FROM cost_line_rows WHERE {where}", params)
        con.execute(f"DELETE FROM cost_line_rows WHERE {where}", params)
        return replaced

    def _record_load(self, con: Connection, load: _Load) -> None:
        con.execute(
            "INSERT OR REPLACE INTO loads VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                load.source,
                load.start,
                load.end,
                load.batch_id,
                self.clock.now(),
                load.rows,
                load.billed_total,
                load.data_end,
                load.fingerprint,
            ],
        )

    def upsert_jobs(self, source: str, jobs: pa.Table) -> int:
        """Insert or update job records by (platform, job_id), keeping when each was first seen."""
        table = conform(jobs, JOB_SCHEMA)
        if table.num_rows == 0:
            return 0
        now = self.clock.now()
        with self.transaction() as con:
            con.register("incoming_jobs", table)
            con.execute(
                """
                INSERT INTO jobs
                SELECT j.platform, j.job_id, ? AS source, j.provider, j.sub_account_id, j.region_id, j.name,
                       j."user", j.owner, j.owner_source, j.state, j.start_time, j.end_time, j.query_text,
                       j.query_hash, j.bytes_processed, j.bytes_billed, j.slot_ms, j.instance_type,
                       j.instance_count, j.max_runtime_seconds, j.estimated_cost, j.projected_cost,
                       j.cost_method, j.billing_currency, j.resource_id, j.labels,
                       ? AS first_seen, ? AS last_seen
                FROM incoming_jobs j
                ON CONFLICT (platform, job_id) DO UPDATE SET
                    source = excluded.source, provider = excluded.provider,
                    sub_account_id = excluded.sub_account_id, region_id = excluded.region_id,
                    name = excluded.name, "user" = coalesce(excluded."user", jobs."user"),
                    owner = coalesce(excluded.owner, jobs.owner),
                    owner_source = coalesce(excluded.owner_source, jobs.owner_source),
                    state = excluded.state, start_time = excluded.start_time, end_time = excluded.end_time,
                    query_text = excluded.query_text, query_hash = excluded.query_hash,
                    bytes_processed = excluded.bytes_processed, bytes_billed = excluded.bytes_billed,
                    slot_ms = excluded.slot_ms, instance_type = excluded.instance_type,
                    instance_count = excluded.instance_count,
                    max_runtime_seconds = excluded.max_runtime_seconds,
                    estimated_cost = excluded.estimated_cost, projected_cost = excluded.projected_cost,
                    cost_method = excluded.cost_method, billing_currency = excluded.billing_currency,
                    resource_id = excluded.resource_id, labels = excluded.labels,
                    last_seen = excluded.last_seen
                """,
                [source, now, now],
            )
            con.unregister("incoming_jobs")
        rows: int = table.num_rows
        return rows

    # -- small key/value state -------------------------------------------------------------------

    def get_state(self, source: str, key: str) -> str | None:
        with self.read() as con:
            row = con.execute("SELECT value FROM source_state WHERE source = ? AND key = ?", [source, key]).fetchone()
        return None if row is None else str(row[0])

    def set_state(self, source: str, key: str, value: str, con: Connection | None = None) -> None:
        sql = "INSERT OR REPLACE INTO source_state VALUES (?, ?, ?, ?)"
        params = [source, key, value, self.clock.now()]
        if con is not None:
            con.execute(sql, params)
            return
        with self.transaction() as own:
            own.execute(sql, params)

    def get_setting(self, key: str) -> str | None:
        with self.read() as con:
            row = con.execute("SELECT value FROM settings WHERE key = ?", [key]).fetchone()
        return None if row is None else str(row[0])

    def set_setting(self, key: str, value: str, actor: str) -> None:
        with self.transaction() as con:
            con.execute("INSERT OR REPLACE INTO settings VALUES (?, ?, ?, ?)", [key, value, self.clock.now(), actor])

    # -- runs ------------------------------------------------------------------------------------

    def start_run(self, job: str) -> int:
        with self.transaction() as con:
            row = con.execute(
                "INSERT INTO runs (job, started_at, status) VALUES (?, ?, 'running') RETURNING id",
                [job, self.clock.now()],
            ).fetchone()
        if row is None:
            raise StoreError("the store did not return the new run's id")
        return int(row[0])

    def finish_run(
        self,
        run_id: int,
        *,
        status: str,
        rows: int | None = None,
        detail: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        with self.transaction() as con:
            con.execute(
                "UPDATE runs SET finished_at = ?, status = ?, row_count = ?, detail = ?, error = ? WHERE id = ?",
                [self.clock.now(), status, rows, json.dumps(detail or {}, default=str), error, run_id],
            )

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a read-only query and fetch every row (for small results)."""
        with self.read() as con:
            return con.execute(sql, params or []).fetchall()

    def query_arrow(self, sql: str, params: list[Any] | None = None) -> pa.Table:
        with self.read() as con:
            table: pa.Table = con.sql(sql, params=params or None).to_arrow_table()
            return table


@dataclass
class Where:
    """A WHERE clause built from optional filters; a filter given ``None`` is left out.

    ``Where().any_of("status", ["open"]).at_least("last_seen", since).sql`` → ``WHERE status IN (?) AND
    last_seen >= ?`` with ``.params`` to pass alongside. An empty ``any_of`` list matches nothing.
    """

    clauses: list[str] = field(default_factory=list)
    params: list[Any] = field(default_factory=list)

    def _add(self, clause: str, *values: Any) -> Where:
        self.clauses.append(clause)
        self.params.extend(values)
        return self

    def equal(self, column: str, value: Any) -> Where:
        return self if value is None else self._add(f"{column} = ?", value)

    def any_of(self, column: str, values: Iterable[Any] | None) -> Where:
        if values is None:
            return self
        wanted = list(values)
        return self._add(f"{column} IN ({', '.join('?' * len(wanted))})", *wanted) if wanted else self._add("FALSE")

    def at_least(self, column: str, value: Any) -> Where:
        return self if value is None else self._add(f"{column} >= ?", value)

    def before(self, column: str, value: Any) -> Where:
        return self if value is None else self._add(f"{column} < ?", value)

    @property
    def sql(self) -> str:
        return ("WHERE " + " AND ".join(self.clauses)) if self.clauses else ""


def _count(con: Connection, sql: str, params: list[Any]) -> int:
    row = con.execute(sql, params).fetchone()
    return int(row[0]) if row else 0


def _check_finite(table: pa.Table, source: str) -> None:
    """Infinite or NaN money would poison every sum (a digest once said "month to date -$inf")."""
    for name in MONEY:
        column = table.column(name).combine_chunks()
        good = pc.and_(pc.is_finite(column), pc.less(pc.abs(column), MAX_AMOUNT))
        bad = pc.invert(pc.fill_null(good, True)).to_numpy(zero_copy_only=False)
        if bad.any():
            index = int(bad.nonzero()[0][0])
            when = table.column("charge_period_start")[index].as_py()
            raise bad_amount_error(source, name, column[index].as_py(), when)


def _check_inside_period(table: pa.Table, start: datetime, end: datetime, source: str) -> None:
    if table.num_rows == 0:
        return
    starts = table.column("charge_period_start")
    _refuse_outside(pc.min(starts).as_py(), pc.max(starts).as_py(), start, end, source)


def _refuse_outside(first: datetime, last: datetime, start: datetime, end: datetime, source: str) -> None:
    if first < start or last >= end:
        raise StoreError(
            f"source {source}: lines from {first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M} fall outside "
            f"the period being replaced [{start:%Y-%m-%d}, {end:%Y-%m-%d})"
        )
