"""Reduce one billing period of AWS export files to cost lines, with bounded memory.

DuckDB does the reading and grouping: it streams Parquet row groups and CSV blocks, spills its hash
tables to ``work_dir`` past ``memory_limit``, and uses every core. The files of a period are read as
few *scans* as possible — every Parquet file with the same columns in one ``read_parquet([...])``,
each CSV on its own — and each scan is read twice at most:

1. with ``resources: top``, a ranking pass that reads only the resource id and cost columns;
2. one grouping pass straight to the storage grain, into a ``partials`` table (with ``resources:
   all``, keyed by a dimension id, the keys once per combination in ``dims``: ``cur_dims``; a
   period of one scan is grouped by the finish straight into the lines file, 20M grouped rows never
   held in a table).

Which tag keys a Parquet tag map holds is read from the map's key column alone (its dictionary pages,
through pyarrow, ``cur_files``), so only those spellings are looked up per line. The finish stage merges the
partials into the period's cost lines (tags map, owner, job, clamped periods), written straight
to one Parquet file (``lines_file``) that the store's DuckDB inserts in one statement: no side holds
a whole 20M-line month in memory and nothing passes through Arrow (``batches`` still hands the lines
out as Arrow runs of whole days, for callers that want tables).

An error names the S3 object it came from. Nothing is handed out before every file of the period has
been read: a bad file means the period yields nothing and keeps its previous data.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from spendwatch.collectors.aws import cur_dims
from spendwatch.collectors.aws.cur_files import ExportFile, constant_columns, map_keys_of, reader_sql
from spendwatch.collectors.aws.cur_finish import finish_narrow_sql, finish_sql
from spendwatch.collectors.aws.cur_group import grouped_per_value_sql
from spendwatch.collectors.aws.cur_sql import (
    CUR_COLUMNS,
    FOCUS_COLUMNS,
    GROUP_KEYS,
    GROUP_VALUES,
    GROUPED_TYPES,
    Columns,
    CurSql,
    Grain,
    detect_columns,
    literal,
    quote,
)
from spendwatch.errors import InputError
from spendwatch.store.lines_file import JOINED, CostLinesFile
from spendwatch.store.schema import COST_LINE_SCHEMA, conform


@dataclass(frozen=True)
class Scan:
    """Export files read together by one DuckDB reader: Parquet files with the same columns, or one CSV."""

    files: tuple[ExportFile, ...]
    columns: Columns
    types: dict[str, str]

    @property
    def reader(self) -> str:
        if len(self.files) == 1:
            return reader_sql(self.files[0])
        paths = ", ".join("'" + str(f.path).replace("'", "''") + "'" for f in self.files)
        return f"read_parquet([{paths}])"

    def label_error(self, exc: BaseException) -> str | None:
        """The error as one line naming the S3 object, if DuckDB's message says which file failed."""
        text = _first_line(exc)
        for file in self.files:
            if str(file.path) in text:
                return f"{file.label}: {text.replace(str(file.path), file.label)}"
        if len(self.files) == 1:
            return f"{self.files[0].label}: {text}"
        return None


def typed_relation(columns: Columns, source: str, types: dict[str, str] | None = None) -> tuple[str, Columns]:
    """Rename known columns to their canonical names and cast them to TIMESTAMP / DOUBLE / VARCHAR.

    ``types`` (column → DuckDB type) lets typed Parquet columns through untouched: casting a DOUBLE
    through text or a TIMESTAMP through a time zone costs more than the whole rest of the reduction.
    """
    kinds = FOCUS_COLUMNS if columns.layout == "focus" else CUR_COLUMNS
    types = types or {}
    select = []
    for key, name in columns.names.items():
        kind, have = kinds[key], types.get(name, "VARCHAR").upper()
        text = have == "VARCHAR"
        if kind == "ts":
            if have == "TIMESTAMP":
                expr = quote(name)
            elif text:
                expr = f"CAST(CAST(NULLIF(TRIM({quote(name)}), '') AS TIMESTAMPTZ) AS TIMESTAMP)"
            else:
                expr = f"CAST({quote(name)} AS TIMESTAMP)"
        elif kind == "num":
            expr = f"CAST(NULLIF(TRIM({quote(name)}), '') AS DOUBLE)" if text else f"CAST({quote(name)} AS DOUBLE)"
        else:
            expr = quote(name) if text else f"CAST({quote(name)} AS VARCHAR)"
        select.append(f"{expr} AS {quote(key)}")
    extra = [c for c in (columns.tag_map, columns.product_map) if c is not None]
    extra += list(columns.tag_columns.values())
    select += [quote(c) for c in dict.fromkeys(extra)]
    renamed = Columns(
        layout=columns.layout,
        names={key: key for key in columns.names},
        tag_map=columns.tag_map,
        tag_map_is_json=columns.tag_map_is_json,
        tag_columns=columns.tag_columns,
        product_map=columns.product_map,
        product_map_is_json=columns.product_map_is_json,
    )
    return f"(SELECT {', '.join(select)} FROM {source}) AS typed", renamed


class CurLoader:
    """Reduces the files of one billing period; use as a context manager (it owns a DuckDB)."""

    def __init__(
        self,
        *,
        tag_keys: Sequence[str],
        owner_tags: Sequence[str],
        job_tags: Sequence[str],
        grain: Grain,
        work_dir: Path,
        memory_limit: str = "1GB",
        threads: int | None = None,
        k8s: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.k8s = k8s  # column (k8s_cluster …, owner) → tag keys naming it, first match wins
        self.tag_keys = list(tag_keys)
        self.owner_tags = list(owner_tags)
        self.job_tags = list(job_tags)
        self.grain = grain
        self.work_dir = work_dir
        spill = work_dir / f"spill-{uuid.uuid4().hex[:8]}"
        config: dict[str, Any] = {"memory_limit": memory_limit, "temp_directory": str(spill)}
        if threads:
            config["threads"] = threads
        self.con = duckdb.connect(":memory:", config=config)
        self._exec("SET TimeZone = 'UTC'")
        self._exec("SET preserve_insertion_order = false")
        self._create_tables()
        self.line_items = 0
        self._sources = 0  # how many separately grouped inputs went into partials
        self._map_keys: dict[tuple[Path, ...], set[str] | None] = {}
        self._constant_cache: dict[tuple[Path, ...], dict[str, str | None]] = {}
        self._lines: Path | None = None  # the finished lines' Parquet file
        self._dims: Path | None = None  # with resources: all, their keys' (CostLinesFile.dims)
        # resources: all — the last scan, its dims added, its lines not grouped yet: when it is the
        # only input, finish groups it straight into the lines file (no 20M-row ``narrow`` table).
        self._deferred: Scan | None = None

    def _exec(self, sql: str, params: Any = None) -> list[Any]:
        """Run one statement to completion (DuckDB wants every result consumed before the next)."""
        return self.con.execute(sql, params).fetchall() if params is not None else self.con.execute(sql).fetchall()

    def __enter__(self) -> CurLoader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.con.close()
        for path in (self._lines, self._dims):
            # Made by this loader, read by the store before the caller moves on: never left behind
            # in a work_dir that outlives the loader.
            if path is not None:
                path.unlink(missing_ok=True)

    def _create_tables(self) -> None:
        names = [*GROUP_KEYS, *(f"tag_{i}" for i in range(len(self.tag_keys))), *GROUP_VALUES, "line_items"]
        columns = ", ".join(f"{n} {GROUPED_TYPES.get(n, 'VARCHAR')}" for n in names)
        self._exec(f"CREATE TABLE partials ({columns})")
        self._exec("CREATE TABLE resource_totals (resource_id VARCHAR, total DOUBLE)")
        self._exec("CREATE TABLE top_resources (resource_id VARCHAR)")
        if self.grain.resources == "all":
            for statement in cur_dims.create_tables_sql(len(self.tag_keys)):
                self._exec(statement)

    # -- reading -------------------------------------------------------------------------------

    def columns_of(self, file: ExportFile) -> Columns:
        return self._describe(file)[0]

    def _describe(self, file: ExportFile) -> tuple[Columns, dict[str, str]]:
        try:
            described = self._exec(f"DESCRIBE SELECT * FROM {reader_sql(file)}")
        except duckdb.Error as exc:
            raise InputError(f"{file.label}: cannot read the file: {_first_line(exc)}") from None
        types = {str(row[0]): str(row[1]) for row in described}
        maps = [name for name, kind in types.items() if kind.upper().startswith("MAP(")]
        columns = detect_columns(list(types), map_columns=maps)
        if columns.missing:
            raise InputError(f"{file.label}: not an AWS cost export: missing column(s) {', '.join(columns.missing)}")
        return columns, types

    def scans(self, files: Sequence[ExportFile]) -> list[Scan]:
        """The files as scans: Parquet files with identical columns together, each CSV alone."""
        groups: dict[tuple[Any, ...], list[tuple[ExportFile, Columns, dict[str, str]]]] = {}
        for number, file in enumerate(files):
            columns, types = self._describe(file)
            key: tuple[Any, ...] = ("parquet", tuple(types.items())) if file.is_parquet else ("csv", number)
            groups.setdefault(key, []).append((file, columns, types))
        return [Scan(tuple(f for f, _, _ in group), group[0][1], group[0][2]) for group in groups.values()]

    def _sql(self, scan: Scan) -> tuple[CurSql, str]:
        """The SQL builder for ``scan`` and the relation of its typed, canonically named columns."""
        columns = scan.columns
        relation, renamed = typed_relation(columns, scan.reader, scan.types)
        keys = None
        if columns.tag_map is not None and not columns.tag_map_is_json and self.tag_keys and scan.files[0].is_parquet:
            paths = tuple(f.path for f in scan.files)
            if paths not in self._map_keys:
                self._map_keys[paths] = map_keys_of(scan.files, columns.tag_map)
            keys = self._map_keys[paths]
        constants = self._constants(scan) if scan.files[0].is_parquet else {}
        return CurSql(renamed, self.tag_keys, self.grain, "duckdb", map_keys=keys, constants=constants), relation

    def _constants(self, scan: Scan) -> dict[str, str | None]:
        """Constant text columns of a Parquet scan, by canonical name (as ``typed_relation`` names them)."""
        paths = tuple(f.path for f in scan.files)
        if paths not in self._constant_cache:
            kinds = FOCUS_COLUMNS if scan.columns.layout == "focus" else CUR_COLUMNS
            text = {
                source: key
                for key, source in scan.columns.names.items()
                if kinds[key] == "text" and scan.types.get(source, "").upper() == "VARCHAR"
            }
            found = constant_columns(scan.files, list(text))
            self._constant_cache[paths] = {text[source]: value for source, value in found.items()}
        return self._constant_cache[paths]

    def _insert(self, scan: Scan, table: str, select: Callable[[Scan], str]) -> None:
        """``INSERT INTO table BY NAME`` the rows ``select`` makes of ``scan``; errors name the file."""
        self._run_on(scan, f"INSERT INTO {table} BY NAME {select(scan)}", select)

    def _run_on(self, scan: Scan, statement: str, select: Callable[[Scan], str], params: Any = None) -> list[Any]:
        """Run ``statement``, which reads ``scan`` as ``select`` does; an error names the file (``_explain``)."""
        try:
            return self._exec(statement, params)
        except duckdb.Error as exc:
            raise InputError(self._explain(scan, exc, select)) from None

    def _explain(self, scan: Scan, exc: duckdb.Error, select: Callable[[Scan], str]) -> str:
        """One line naming the file that failed; when DuckDB does not say, find it file by file."""
        named = scan.label_error(exc)
        if named is not None:
            return named
        for file in scan.files:
            alone = Scan((file,), scan.columns, scan.types)
            try:
                # The same statement, so the same columns and pages are read as in the failed scan.
                self._exec(f"CREATE OR REPLACE TEMP TABLE probe AS {select(alone)}")
            except duckdb.Error as single:
                return alone.label_error(single) or f"{file.label}: {_first_line(single)}"
            finally:
                self._exec("DROP TABLE IF EXISTS probe")
        labels = ", ".join(f.label for f in scan.files)
        return f"{labels}: cannot be read together: {_first_line(exc)}"

    def load(self, files: Sequence[ExportFile]) -> None:
        """Reduce ``files`` into ``partials``; raises ``InputError`` naming the first bad file."""
        scans = self.scans(files)
        if self.grain.resources == "top":
            for scan in scans:
                self._insert(scan, "resource_totals", self._totals_sql)
            self.select_top_resources()
        for scan in scans:
            if self.grain.resources == "all":
                self._group_deferred()
                self._insert(scan, "dims", self._new_dims_sql)
                self._deferred = scan
            else:
                self._insert(scan, "partials", self._grouped_sql)
            self._sources += 1

    def _group_deferred(self) -> None:
        """Group the deferred scan into ``narrow``: another input joins it, so ``finish`` must merge."""
        if self._deferred is not None:
            self._insert(self._deferred, "narrow", self._narrow_sql)
            self._deferred = None

    def _totals_sql(self, scan: Scan) -> str:
        cur, relation = self._sql(scan)
        return cur.resource_totals(relation)

    def _grouped_sql(self, scan: Scan) -> str:
        # Many lines per row: the keys are computed once per group of raw values (cur_group).
        cur, relation = self._sql(scan)
        return grouped_per_value_sql(cur, relation, self.grain, top="top_resources", absent=cur.absent())

    def _new_dims_sql(self, scan: Scan) -> str:
        # resources: all — one row per line, so the wide keys are grouped per value instead (cur_dims).
        cur, relation = self._sql(scan)
        return cur_dims.new_dims_sql(cur.normalised(relation), cur.tag_indices(), len(self.tag_keys))

    def _narrow_sql(self, scan: Scan) -> str:
        cur, relation = self._sql(scan)
        return cur_dims.narrow_sql(cur, relation, self.grain, absent=cur.absent())

    def select_top_resources(self) -> None:
        self._exec(
            "INSERT INTO top_resources SELECT resource_id FROM resource_totals GROUP BY resource_id "
            "ORDER BY sum(total) DESC, resource_id LIMIT ?",
            [self.grain.top_resources],
        )

    def add_partials(self, table: pa.Table) -> None:
        """Grouped rows computed elsewhere (the Athena pushdown) join the local ones."""
        self._group_deferred()
        self.con.register("incoming_partials", table)
        self._exec("INSERT INTO partials BY NAME SELECT * FROM incoming_partials")
        self.con.unregister("incoming_partials")
        self._sources += 1

    # -- output --------------------------------------------------------------------------------

    def finish(self, period_start: datetime, period_end: datetime) -> int:
        """Merge the partials into cost lines clamped to the period; returns the number of lines.

        The last step: the partials are dropped, nothing more can be loaded into this loader.
        """
        unit = "HOUR" if self.grain.period == "hourly" else "DAY"
        params = {"start": _naive_utc(period_start), "end": _naive_utc(period_end)}
        if self._sources > 1:
            self._group_deferred()
        grouped, tag_values = self._grouped_rows()
        outside, self.line_items, tagged = self._checks(grouped, tag_values, unit, params)
        present = {i for i, n in enumerate(tagged) if n}
        if outside:
            self._group_deferred()  # lines clamped into the period can share a key: merged below
        # One scan groups each key once; only rows from several scans, or clamped into the period,
        # can share a key and need merging.
        merge = self._sources > 1 or outside
        # The grouped rows are spent once the lines are made: freeing them keeps them out of the peak
        # while the store reads the lines (~200 MB for a 20M-line month).
        for table in ("resource_totals", "top_resources"):
            self._exec(f"DROP TABLE {table}")
        # Straight to Parquet, which the store's DuckDB reads in one INSERT ... SELECT: a 20M-line
        # month is written once, never held in memory nor handed over through Arrow.
        path = self.work_dir / f"lines-{uuid.uuid4().hex[:8]}.parquet"
        if grouped == "narrow":
            self._write_split(path, unit, present, merge, params)
        else:
            sql = finish_sql(
                grouped, self.tag_keys, self.owner_tags, self.job_tags, unit, present, merge=merge, k8s=self.k8s
            )
            self._exec(f"COPY ({sql}) TO {literal(str(path))} (FORMAT parquet)", params)
        self._lines = path
        self._exec("DROP TABLE partials")
        lines = f"read_parquet({literal(str(path))})"
        if self._dims is not None:
            lines = JOINED.format(lines=literal(str(path)), dims=literal(str(self._dims)))
        self._exec(f"CREATE OR REPLACE VIEW lines AS SELECT * FROM {lines}")
        return int(self._exec("SELECT count(*) FROM lines")[0][0])

    def _checks(
        self, grouped: str, tag_values: str, unit: str, params: dict[str, datetime]
    ) -> tuple[bool, int, Sequence[int]]:
        """Whether any line lies outside the period, the line items read, each tag column's count of values."""
        counts = [f"count(tag_{i})" for i in range(len(self.tag_keys))]
        if self._deferred is not None:
            scan = self._deferred
            first, last, line_items = self._run_on(scan, self._scan_checks_sql(scan), self._scan_checks_sql)[0]
            step = timedelta(hours=1) if unit == "HOUR" else timedelta(days=1)
            outside = bool(line_items) and (first < params["start"] or last > params["end"] - step)
            together = False
        else:
            together = tag_values == grouped  # one pass reads both
            checks = [
                f"count(*) FILTER (WHERE period_start < $start OR period_start > $end - INTERVAL 1 {unit})",
                "sum(line_items)",
                *(counts if together else ()),
            ]
            row = self._exec(f"SELECT {', '.join(checks)} FROM {grouped}", params)[0]
            outside, line_items = bool(row[0]), row[1]
        if together:
            tagged = row[2:]
        else:
            tagged = self._exec(f"SELECT {', '.join(counts)} FROM {tag_values}")[0] if counts else ()
        return outside, int(line_items or 0), tagged

    def _scan_checks_sql(self, scan: Scan) -> str:
        """The first and last hour (or day) of ``scan``'s lines and their number."""
        cur, relation = self._sql(scan)
        unit = "hour" if self.grain.period == "hourly" else "day"
        truncated = f"date_trunc('{unit}', usage_start)"
        return f"SELECT min({truncated}), max({truncated}), count(*) FROM ({cur.normalised(relation)}) AS n"

    def _write_split(self, path: Path, unit: str, present: set[int], merge: bool, params: dict[str, datetime]) -> None:
        """The lines as two files: each line's own columns, and its keys, tags, owner and job per dim_id.

        The store keeps them as they are (``CostLinesFile.dims``). A single scan that needs no merging
        is grouped straight into the file: its 20M grouped rows are never held in a table.
        """
        scan = self._deferred
        narrow = "narrow" if scan is None else f"({self._narrow_sql(scan)})"
        rows, per_dim = finish_narrow_sql(
            self.tag_keys, self.owner_tags, self.job_tags, unit, present, merge=merge, k8s=self.k8s, narrow=narrow
        )
        dims = self.work_dir / f"dims-{uuid.uuid4().hex[:8]}.parquet"
        self._exec(f"COPY ({per_dim}) TO {literal(str(dims))} (FORMAT parquet)")
        self._dims = dims
        copy = f"COPY ({rows}) TO {literal(str(path))} (FORMAT parquet)"
        if scan is None:
            self._exec(copy, params)
        else:
            try:
                self._run_on(scan, copy, self._narrow_sql, params)
            except InputError:
                path.unlink(missing_ok=True)  # a half-written file is never handed out nor left behind
                raise
            self._deferred = None
        self._exec("DROP TABLE narrow")
        self._exec("DROP TABLE dims")

    def _grouped_rows(self) -> tuple[str, str]:
        """The relation of every grouped row with its keys, and a small one holding their tag values.

        With ``resources: all`` the rows are ``narrow``, their keys and tags in ``dims`` (cur_dims);
        rows grouped elsewhere (the Athena pushdown's, in ``partials``) join them there first.
        """
        if self.grain.resources != "all":
            return "partials", "partials"
        tags = len(self.tag_keys)
        self._exec(f"INSERT INTO dims BY NAME {cur_dims.new_dims_sql('SELECT * FROM partials', range(tags), tags)}")
        self._exec(f"INSERT INTO narrow BY NAME {cur_dims.narrow_from_wide_sql('partials', tags)}")
        self._exec("DELETE FROM partials")
        return "narrow", "dims"

    def lines_file(self) -> CostLinesFile:
        """The finished lines as one Parquet file, for ``Store.replace_cost_lines`` (after ``finish``).

        The file lives in ``work_dir`` until the loader is closed.
        """
        if self._lines is None:
            raise RuntimeError("lines_file() before finish()")
        return CostLinesFile(self._lines, self._dims)

    def batches(
        self, period_start: datetime, period_end: datetime, max_rows: int = 250_000
    ) -> Iterator[tuple[datetime, datetime, pa.Table]]:
        """The finished lines in runs of whole UTC days of at most ~``max_rows`` lines each.

        The runs cover the whole period (empty days too), so replacing them all replaces the period;
        a small month is one run, a 20M-line month a few — Arrow never holds the whole month.
        """
        counts = dict(
            self._exec(
                "SELECT CAST(date_trunc('day', charge_period_start) AS TIMESTAMP), count(*) FROM lines GROUP BY 1"
            )
        )
        start = day = period_start
        rows = 0
        while day < period_end:
            nxt = min(day + timedelta(days=1), period_end)
            today = int(counts.get(_naive_utc(day), 0))
            if rows and rows + today > max_rows:
                yield start, day, self._range(start, day)
                start, rows = day, 0
            rows += today
            day = nxt
        yield start, period_end, self._range(start, period_end)

    def _range(self, start: datetime, end: datetime) -> pa.Table:
        table = self.con.sql(
            "SELECT * FROM lines WHERE charge_period_start >= $start AND charge_period_start < $end",
            params={"start": start, "end": end},
        ).to_arrow_table()
        return conform(table, COST_LINE_SCHEMA)

    def totals(self) -> list[tuple[Any, ...]]:
        return self._exec(
            "SELECT sub_account_id, charge_category, sum(billed_cost) FROM lines GROUP BY ALL ORDER BY ALL"
        )


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
