"""Reduce one billing period of AWS export files to cost lines, with bounded memory.

DuckDB does the reading and grouping: it streams Parquet row groups and CSV blocks, spills its hash
tables to ``work_dir`` past ``memory_limit``, and uses every core. Each file is reduced on its own
(so an error names the file), into a ``partials`` table; the finish stage merges the partials into the
period's cost lines, which are then handed out one day at a time, so the Arrow side never holds more
than a day of a month either.

Nothing is handed out before every file of the period has been read: a bad file means the period
yields nothing and keeps its previous data.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from spendwatch.collectors.aws_cur_sql import (
    CUR_COLUMNS,
    FOCUS_COLUMNS,
    GROUP_KEYS,
    GROUP_VALUES,
    Columns,
    CurSql,
    Grain,
    detect_columns,
    finish_sql,
    grouped_sql,
    quote,
    resource_totals_sql,
)
from spendwatch.errors import InputError
from spendwatch.schema import COST_LINE_SCHEMA, conform


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
    ) -> None:
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

    def _exec(self, sql: str, params: Any = None) -> list[Any]:
        """Run one statement to completion (DuckDB wants every result consumed before the next)."""
        return self.con.execute(sql, params).fetchall() if params is not None else self.con.execute(sql).fetchall()

    def __enter__(self) -> CurLoader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.con.close()

    def _create_tables(self) -> None:
        types = {
            "period_start": "TIMESTAMP",
            "period_end": "TIMESTAMP",
            "billed_cost": "DOUBLE",
            "effective_cost": "DOUBLE",
            "list_cost": "DOUBLE",
            "is_estimated": "BOOLEAN",
            "line_items": "BIGINT",
        }
        names = [*GROUP_KEYS, *(f"tag_{i}" for i in range(len(self.tag_keys))), *GROUP_VALUES, "line_items"]
        columns = ", ".join(f"{n} {types.get(n, 'VARCHAR')}" for n in names)
        self._exec(f"CREATE TABLE partials ({columns})")
        self._exec("CREATE TABLE resource_totals (resource_id VARCHAR, total DOUBLE)")
        self._exec("CREATE TABLE top_resources (resource_id VARCHAR)")

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

    def _normalised(self, file: ExportFile) -> str:
        columns, types = self._describe(file)
        relation, renamed = typed_relation(columns, reader_sql(file), types)
        keys = None
        if columns.tag_map is not None and not columns.tag_map_is_json and self.tag_keys:
            # One cheap pass for the keys present saves a lookup per spelling per line.
            found = self._run_fetch(
                file, f"SELECT DISTINCT unnest(map_keys({quote(columns.tag_map)})) FROM {reader_sql(file)}"
            )
            keys = {str(row[0]) for row in found}
        return CurSql(renamed, self.tag_keys, self.grain, "duckdb", map_keys=keys).normalised(relation)

    def _run_fetch(self, file: ExportFile, sql: str) -> list[Any]:
        try:
            return self._exec(sql)
        except duckdb.Error as exc:
            raise InputError(f"{file.label}: {_first_line(exc)}") from None

    def _run(self, file: ExportFile, sql: str) -> None:
        try:
            self._exec(sql)
        except duckdb.Error as exc:
            raise InputError(f"{file.label}: {_first_line(exc)}") from None

    def load(self, files: Sequence[ExportFile]) -> None:
        """Reduce ``files`` into ``partials``; raises ``InputError`` naming the first bad file."""
        normalised = {file: self._normalised(file) for file in files}
        if self.grain.resources == "top":
            for file, sql in normalised.items():
                self._run(file, f"INSERT INTO resource_totals {resource_totals_sql(sql)}")
            self.select_top_resources()
        tags = len(self.tag_keys)
        for file, sql in normalised.items():
            grouped = grouped_sql(sql, self.grain, tags, top="top_resources", count=True)
            self._run(file, f"INSERT INTO partials BY NAME {grouped}")

    def select_top_resources(self) -> None:
        self._exec(
            "INSERT INTO top_resources SELECT resource_id FROM resource_totals GROUP BY resource_id "
            "ORDER BY sum(total) DESC, resource_id LIMIT ?",
            [self.grain.top_resources],
        )

    def add_partials(self, table: pa.Table) -> None:
        """Grouped rows computed elsewhere (the Athena pushdown) join the local ones."""
        self.con.register("incoming_partials", table)
        self._exec("INSERT INTO partials BY NAME SELECT * FROM incoming_partials")
        self.con.unregister("incoming_partials")

    # -- output --------------------------------------------------------------------------------

    def finish(self, period_start: datetime, period_end: datetime) -> int:
        """Merge the partials into cost lines clamped to the period; returns the number of lines."""
        unit = "HOUR" if self.grain.period == "hourly" else "DAY"
        present: set[int] = set()
        if self.tag_keys:
            counts = self._exec(
                "SELECT " + ", ".join(f"count(tag_{i})" for i in range(len(self.tag_keys))) + " FROM partials"
            )[0]
            present = {i for i, n in enumerate(counts) if n}
        sql = finish_sql("partials", self.tag_keys, self.owner_tags, self.job_tags, unit, present)
        start, end = _naive_utc(period_start), _naive_utc(period_end)
        self._exec(f"CREATE OR REPLACE TABLE lines AS {sql}", {"start": start, "end": end})
        row = self._exec("SELECT count(*), (SELECT sum(line_items) FROM partials) FROM lines")[0]
        self.line_items = int(row[1] or 0)
        return int(row[0])

    def batches(
        self, period_start: datetime, period_end: datetime, max_rows: int = 500_000
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
