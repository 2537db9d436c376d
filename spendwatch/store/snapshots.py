"""Store snapshots, a full check of the file, and restoring a damaged store.

Why copies: a DuckDB file no process has open is a complete, consistent database (DuckDB writes
its write-ahead log into the file when the last connection closes). So a snapshot is a byte copy
taken under the store's *shared* lock — readers go on, the one writer waits — then opened and read
end to end (``check_file``: every column of every table, so every block's checksum is verified)
before it replaces the oldest snapshot. A damaged store is never snapshotted over good copies.

Restoring (``restore``) never deletes: the damaged file is moved aside (``<store>.damaged-<time>``),
the newest good snapshot is copied in its place, and every table that still reads cleanly from the
damaged file is carried over (it is newer than the snapshot's copy). That keeps the digest and
alert ledgers and the kill-switch journal of the hours since the snapshot whenever they survived,
so a restore neither repeats a digest nor runs an action twice. Cost lines of periods whose tables
were lost come back with the next collection (sources replace whole periods).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from spendwatch.errors import StoreAccessError, StoreBusyError, StoreDamagedError, UserError
from spendwatch.store import SCHEMA_VERSION, describe_os_error
from spendwatch.store.locks import LockTimeout, RWFileLock, SingletonLock, daemon_lock_path

# Tables that describe each other and must come from the same file, carried over together or not at
# all: cost lines (their rows and the dims those point to; ``cost_lines`` is a view of the two) with the
# loads and source fingerprints that say they are current (else a source would skip a period it lost),
# and the kill-switch journal with its events.
_TOGETHER = (("cost_line_rows", "cost_line_dims", "loads", "source_state"), ("actions", "action_events"))
_NAME = re.compile(r"^snapshot-(\d{8}T\d{6}Z)\.duckdb$")
_STAMP = "%Y%m%dT%H%M%SZ"
SNAPSHOT_EVERY = timedelta(days=1)


@dataclass(frozen=True)
class CheckResult:
    """What reading a store file end to end found."""

    path: Path
    problem: str | None = None
    schema_version: int | None = None
    rows: dict[str, int] = field(default_factory=dict)
    views: frozenset[str] = frozenset()  # names in ``rows`` that are views (``cost_lines``), not tables

    @property
    def ok(self) -> bool:
        return self.problem is None

    def summary(self) -> str:
        if not self.ok:
            return f"{self.path}: damaged ({self.problem})"
        tables = {name: count for name, count in self.rows.items() if name not in self.views}
        return f"{self.path}: ok — schema {self.schema_version}, {len(tables)} tables, {sum(tables.values()):,} rows"


@dataclass(frozen=True)
class Snapshot:
    path: Path
    taken_at: datetime


@dataclass(frozen=True)
class RestoreResult:
    snapshot: Snapshot
    damaged_copy: Path | None
    salvaged: list[str]
    lost: dict[str, str]

    def lines(self) -> list[str]:
        out = [f"restored the snapshot of {self.snapshot.taken_at:%Y-%m-%d %H:%M} UTC ({self.snapshot.path.name})"]
        if self.damaged_copy is not None:
            out.append(f"the damaged file was moved to {self.damaged_copy} (delete it once you are satisfied)")
        if self.salvaged:
            out.append(f"carried over from the damaged file (newer than the snapshot): {', '.join(self.salvaged)}")
        for table, why in self.lost.items():
            out.append(f"not readable in the damaged file, kept as in the snapshot: {table} ({why})")
        out.append("the next collection re-loads cost data newer than the snapshot")
        return out


# -- checking ------------------------------------------------------------------------------------


def check_file(path: Path) -> CheckResult:
    """Open ``path`` read-only and read every column of every table; never raises for a bad file."""
    if not path.exists():
        return CheckResult(path, problem="no such file")
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        return CheckResult(path, problem=_first_line(exc))
    try:
        return _check_connection(con, path)
    finally:
        con.close()


def _check_connection(con: duckdb.DuckDBPyConnection, path: Path) -> CheckResult:
    rows: dict[str, int] = {}
    views: list[str] = []
    try:
        database = _current_database(con)
        for table in _tables(con, database):
            count = con.execute(f"SELECT count(*) FROM {_quote(table)}").fetchone()
            # Hashing every column forces every data block to be read, and DuckDB verifies each
            # block's checksum as it reads it.
            con.execute(f"SELECT sum(hash(COLUMNS(*))) FROM {_quote(table)}").fetchall()
            rows[table] = int(count[0]) if count else 0
        # Views hold no data of their own (their tables were read above); counting them checks that
        # they still resolve, and gives ``cost_lines`` its number of lines.
        for view in _views(con, database):
            count = con.execute(f"SELECT count(*) FROM {_quote(view)}").fetchone()
            rows[view] = int(count[0]) if count else 0
            views.append(view)
        # A file a process created but was stopped before migrating is an empty store, not a damaged one.
        version_row = (
            con.execute("SELECT max(version) FROM schema_version").fetchone() if "schema_version" in rows else None
        )
    except duckdb.Error as exc:
        return CheckResult(path, problem=_first_line(exc), rows=rows, views=frozenset(views))
    version = int(version_row[0]) if version_row and version_row[0] is not None else 0
    if version > SCHEMA_VERSION:
        return CheckResult(path, problem=f"schema version {version} is newer than this spendwatch ({SCHEMA_VERSION})")
    return CheckResult(path, schema_version=version, rows=rows, views=frozenset(views))


def _tables(con: duckdb.DuckDBPyConnection, database: str) -> list[str]:
    found = con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = ? AND schema_name = 'main' ORDER BY 1",
        [database],
    ).fetchall()
    return [str(row[0]) for row in found]


def _views(con: duckdb.DuckDBPyConnection, database: str) -> list[str]:
    """The store's own views (``cost_lines``), not DuckDB's built-in ones."""
    found = con.execute(
        "SELECT view_name FROM duckdb_views() WHERE database_name = ? AND schema_name = 'main' AND NOT internal "
        "ORDER BY 1",
        [database],
    ).fetchall()
    return [str(row[0]) for row in found]


def _quote(name: str) -> str:
    """An identifier from the store's own catalog, quoted (never a value from cloud data)."""
    return '"' + name.replace('"', '""') + '"'


def _first_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


# -- snapshots -----------------------------------------------------------------------------------


def snapshot_folder(store_path: Path, folder: Path | None = None) -> Path:
    return folder if folder is not None else store_path.with_name(store_path.name + ".snapshots")


def list_snapshots(folder: Path) -> list[Snapshot]:
    """Snapshots in ``folder``, newest first (their time is in the name, not the file's mtime)."""
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match and entry.is_file():
            taken = datetime.strptime(match.group(1), _STAMP).replace(tzinfo=UTC)
            found.append(Snapshot(entry, taken))
    return sorted(found, key=lambda s: s.taken_at, reverse=True)


def snapshot_due(folder: Path, now: datetime, every: timedelta = SNAPSHOT_EVERY) -> bool:
    newest = list_snapshots(folder)
    return not newest or now - newest[0].taken_at >= every - timedelta(minutes=5)


def take_snapshot(store_path: Path, folder: Path, now: datetime, *, keep: int, lock_timeout: float = 60.0) -> Snapshot:
    """Copy the store under its shared lock, check the copy, keep the ``keep`` newest snapshots.

    Raises ``StoreDamagedError`` (and keeps the older snapshots) when the store does not read cleanly.
    """
    if not store_path.exists():
        raise StoreAccessError(f"store {store_path}: no store file yet, nothing to snapshot")
    _make_folder(folder)
    final = folder / f"snapshot-{now.astimezone(UTC):{_STAMP}}.duckdb"
    partial = folder / f".{final.name}.partial-{os.getpid()}"
    try:
        with _held(store_path, exclusive=False, timeout=lock_timeout):
            _copy_database(store_path, partial)
        result = check_file(partial)
        if not result.ok:
            raise StoreDamagedError(
                f"store {store_path} is damaged ({result.problem}); no snapshot taken, the older ones are kept; "
                "`spendwatch store restore` brings back the last good one"
            )
        partial.replace(final)
        _fsync_folder(folder)
    finally:
        _remove_database(partial)
    for old in list_snapshots(folder)[max(keep, 1) :]:
        _remove_database(old.path)
    return Snapshot(final, now.astimezone(UTC).replace(microsecond=0))


# -- restoring -----------------------------------------------------------------------------------


def restore(
    store_path: Path,
    folder: Path,
    now: datetime,
    *,
    snapshot: Path | None = None,
    force: bool = False,
    lock_timeout: float = 60.0,
) -> RestoreResult:
    """Put the newest good snapshot (or ``snapshot``) in place of a damaged store, carrying over what survived."""
    daemon = _daemon_lock(store_path)
    try:
        with _held(store_path, exclusive=True, timeout=lock_timeout):
            current = check_file(store_path) if store_path.exists() else None
            if current is not None and current.ok and not force:
                raise UserError(
                    f"store {store_path} reads cleanly ({current.summary().split(' — ')[-1]}); nothing to restore "
                    "(pass --force to roll it back to the snapshot anyway)"
                )
            chosen = _choose_snapshot(folder, snapshot)
            return _swap_in(store_path, chosen, now)
    finally:
        daemon.release()


def _daemon_lock(store_path: Path) -> SingletonLock:
    lock = SingletonLock(daemon_lock_path(store_path))
    try:
        lock.acquire()
    except LockTimeout as exc:
        raise StoreBusyError(
            f"store {store_path}: a spendwatch daemon (pid {exc.args[0] if exc.args else 'unknown'}) is running on "
            "it; stop it before restoring"
        ) from None
    except OSError as exc:
        raise StoreAccessError(f"store {store_path}: {describe_os_error(exc, lock.path)}") from None
    return lock


def _choose_snapshot(folder: Path, given: Path | None) -> Snapshot:
    if given is not None:
        path = given if given.exists() or given.is_absolute() else folder / given
        result = check_file(path)
        if not result.ok:
            raise UserError(f"snapshot {path}: {result.problem}; choose another (`spendwatch store check` lists them)")
        match = _NAME.match(path.name)
        taken = datetime.strptime(match.group(1), _STAMP).replace(tzinfo=UTC) if match else _mtime(path)
        return Snapshot(path, taken)
    snapshots = list_snapshots(folder)
    if not snapshots:
        raise UserError(
            f"no snapshots in {folder}: the daemon takes one a day (store.snapshots); without one, move the "
            "damaged store aside and collect again (`spendwatch collect --since …`)"
        )
    for candidate in snapshots:
        if check_file(candidate.path).ok:
            return candidate
    raise UserError(f"none of the {len(snapshots)} snapshot(s) in {folder} reads cleanly")


def _swap_in(store_path: Path, chosen: Snapshot, now: datetime) -> RestoreResult:
    incoming = store_path.with_name(f".{store_path.name}.restoring-{os.getpid()}")
    damaged = store_path.with_name(f"{store_path.name}.damaged-{now.astimezone(UTC):{_STAMP}}")
    try:
        _copy_database(chosen.path, incoming)
        salvaged, lost = _salvage(store_path, incoming) if store_path.exists() else ([], {})
        moved = None
        if store_path.exists():
            _move_database(store_path, damaged)
            moved = damaged
        incoming.replace(store_path)
        _fsync_folder(store_path.parent)
    finally:
        _remove_database(incoming)
    return RestoreResult(chosen, moved, salvaged, lost)


def _salvage(damaged: Path, restored: Path) -> tuple[list[str], dict[str, str]]:
    """Replace each table of ``restored`` with the damaged file's copy when that copy reads cleanly."""
    try:
        source = duckdb.connect(str(damaged), read_only=True)
    except duckdb.Error as exc:
        return [], {"every table": _first_line(exc)}
    try:
        readable, lost = _readable_tables(source)
    finally:
        source.close()
    if not readable:
        return [], lost
    salvaged: list[str] = []
    con = duckdb.connect(str(restored))
    try:
        con.execute("ATTACH ? AS damaged (READ_ONLY)", [str(damaged)])
        wanted = set(_tables(con, _current_database(con)))
        # A group is carried over whole, in one transaction, or not at all: every one of its tables
        # must read in the damaged file and exist in the snapshot (a snapshot of an older schema
        # keeps its own cost lines, loads and fingerprints together).
        units: list[tuple[str, ...]] = []
        for group in _TOGETHER:
            missing = [t for t in group if t not in readable or t not in wanted]
            for table in group:
                if missing and table in readable:
                    readable.remove(table)
                    why = "did not read" if missing[0] in lost else "is not in both files"
                    lost[table] = f"kept with {missing[0]}, which {why}"
            if not missing:
                units.append(group)
                for table in group:
                    readable.remove(table)
        units += [(t,) for t in readable if t in wanted and t != "schema_version"]
        for unit in units:
            try:
                con.execute("BEGIN TRANSACTION")
                for table in unit:
                    con.execute(f"DELETE FROM {_quote(table)}")
                    con.execute(f"INSERT INTO {_quote(table)} SELECT * FROM damaged.main.{_quote(table)}")
                con.execute("COMMIT")
                salvaged.extend(unit)
            except duckdb.Error as exc:
                con.execute("ROLLBACK")
                for table in unit:
                    lost[table] = _first_line(exc)
        _advance_sequences(con)
        con.execute("DETACH damaged")
    finally:
        con.close()
    return salvaged, lost


def _current_database(con: duckdb.DuckDBPyConnection) -> str:
    row = con.execute("SELECT current_database()").fetchone()
    return str(row[0]) if row else "main"


def _readable_tables(con: duckdb.DuckDBPyConnection) -> tuple[list[str], dict[str, str]]:
    readable: list[str] = []
    lost: dict[str, str] = {}
    try:
        tables = _tables(con, _current_database(con))
    except duckdb.Error as exc:
        return [], {"every table": _first_line(exc)}
    for table in tables:
        try:
            con.execute(f"SELECT sum(hash(COLUMNS(*))) FROM {_quote(table)}").fetchall()
            readable.append(table)
        except duckdb.Error as exc:
            lost[table] = _first_line(exc)
    return readable, lost


def _advance_sequences(con: duckdb.DuckDBPyConnection) -> None:
    """Carried-over rows may hold ids past the snapshot's sequences: move each past its column's max."""
    defaults = con.execute(
        "SELECT table_name, column_name, column_default FROM duckdb_columns() "
        "WHERE database_name = current_database() AND column_default LIKE 'nextval(%'"
    ).fetchall()
    for table, column, default in defaults:
        match = re.search(r"nextval\('([A-Za-z0-9_]+)'", str(default))
        if match is None:
            continue
        row = con.execute(f"SELECT max({_quote(str(column))}) FROM {_quote(str(table))}").fetchone()
        top = int(row[0]) if row and row[0] is not None else 0
        last = con.execute(
            "SELECT coalesce(last_value, 0) FROM duckdb_sequences() WHERE database_name = current_database() "
            "AND sequence_name = ?",
            [match.group(1)],
        ).fetchone()
        if last is not None and top > int(last[0]):
            con.execute("SELECT setval(?, ?)", [match.group(1), top])


# -- files ---------------------------------------------------------------------------------------


@contextmanager
def _held(store_path: Path, *, exclusive: bool, timeout: float) -> Iterator[None]:
    lock = RWFileLock(store_path.with_name(store_path.name + ".lock"))
    try:
        with lock.hold(exclusive=exclusive, timeout=timeout):
            yield
    except LockTimeout:
        raise StoreBusyError(
            f"store {store_path} is busy: another spendwatch process held it for more than {timeout:g}s"
        ) from None
    except OSError as exc:
        if exc.filename is not None and str(exc.filename).startswith(str(store_path)):
            raise StoreAccessError(f"store {store_path}: {describe_os_error(exc, store_path)}") from None
        raise


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreAccessError(f"snapshots: {describe_os_error(exc, folder)}") from None


def _copy_database(source: Path, target: Path) -> None:
    """``source`` (and its write-ahead log, if a crash left one) to ``target``, flushed to disk."""
    try:
        _copy_file(source, target)
        wal = source.with_name(source.name + ".wal")
        if wal.exists():
            _copy_file(wal, target.with_name(target.name + ".wal"))
    except OSError as exc:
        _remove_database(target)
        raise StoreAccessError(f"copying {source} to {target}: {describe_os_error(exc, target)}") from None


def _copy_file(source: Path, target: Path) -> None:
    with source.open("rb") as reader, target.open("wb") as writer:
        shutil.copyfileobj(reader, writer, length=1 << 20)
        writer.flush()
        os.fsync(writer.fileno())


def _move_database(source: Path, target: Path) -> None:
    source.replace(target)
    wal = source.with_name(source.name + ".wal")
    if wal.exists():
        wal.replace(target.with_name(target.name + ".wal"))


def _remove_database(path: Path) -> None:
    for candidate in (path, path.with_name(path.name + ".wal")):
        candidate.unlink(missing_ok=True)


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mtime(path: Path) -> datetime:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC)


def check_store(store_path: Path, folder: Path, *, lock_timeout: float = 60.0) -> tuple[CheckResult, list[Snapshot]]:
    """The live store's check (under its shared lock) and the snapshots there are."""
    with _held(store_path, exclusive=False, timeout=lock_timeout):
        result = check_file(store_path)
    return result, list_snapshots(folder)


def damage_message(result: CheckResult, snapshots: list[Snapshot]) -> str:
    """One line: what is wrong with the store and what to do."""
    if snapshots:
        newest = snapshots[0]
        todo = (
            f"`spendwatch store restore` brings back the snapshot of {newest.taken_at:%Y-%m-%d %H:%M} UTC "
            "and carries over every table that still reads"
        )
    else:
        todo = "there is no snapshot: move the file aside and collect again (`spendwatch collect --since …`)"
    return f"store {result.path} is damaged ({result.problem}); {todo}"


__all__ = [
    "CheckResult",
    "RestoreResult",
    "Snapshot",
    "check_file",
    "check_store",
    "damage_message",
    "list_snapshots",
    "restore",
    "snapshot_due",
    "snapshot_folder",
    "take_snapshot",
]
