"""A monitor's series out of the store, a shard of whole series at a time.

The panel — every series of a monitor, one column per step — was a dense matrix in memory, plus the
grouped query result it was built from: 1M daily series over 200 days is 1.6 GB of matrix alone.
``stream_panel`` never holds it whole:

1. under the store's shared lock, DuckDB groups the monitor's cost lines per series and step and
   writes them, sorted by series, to a Parquet file in a temporary folder (DuckDB sorts and writes
   with bounded memory, spilling if it must); the lock is released as soon as the file is written,
   as before the panel was read;
2. the file is read back in Arrow batches, cut at series boundaries into ``PanelShard``\\ s of at
   most ``rows`` series: each a dense (series × steps) block and the series' keys, and — when a
   line of the panel is a recurring charge — the block of those charges' dollars (``declared``).

A series is NaN before its first line (a new account or job is a cold start, not a jump from zero)
and 0 after it on steps with no lines (no lines in a bill means nothing was spent). ``declared`` is
the part of a cell the bill calls a recurring charge (FOCUS ``ChargeFrequency = Recurring``), NaN
where no line of the cell has a ChargeFrequency; a shard with no recurring dollar carries None (the
model then learns charges from history alone, exactly as an all-zero block would make it). Series come in
the order of their dimension values and currency, so every run and every worker count sees them in
the same order.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from spendwatch.detect.monitors import MonitorConfig, dimension_value_sql, monitor_clauses
from spendwatch.errors import UserError
from spendwatch.store import Store

COST_COLUMNS = ("effective_cost", "billed_cost", "list_cost")
_BATCH_ROWS = 262_144


@dataclass(frozen=True)
class PanelShard:
    """Whole series of a monitor: their keys and a dense (series × steps) block of costs."""

    first: int  # index of the first series in the whole panel
    keys: list[str]
    dimensions: list[dict[str, str]]
    currencies: list[str]
    values: np.ndarray
    declared: np.ndarray | None = None  # (series × steps) recurring $; None when the shard has none


def series_key(dimensions: dict[str, str], currency: str) -> str:
    return json.dumps({**dimensions, "billing_currency": currency}, sort_keys=True, separators=(",", ":"))


def step_of(granularity: str) -> timedelta:
    return timedelta(hours=1) if granularity == "hourly" else timedelta(days=1)


def columns(start: datetime, end: datetime, granularity: str) -> list[datetime]:
    """The step starts of [start, end), in UTC."""
    step = step_of(granularity)
    count = max(0, int((end - start) / step))
    first = start.astimezone(UTC)
    return [first + i * step for i in range(count)]


@dataclass
class PanelStream:
    """The monitor's series, counted, and a one-pass iterator of their shards."""

    series: int
    shards: Iterator[PanelShard]

    def __iter__(self) -> Iterator[PanelShard]:
        return self.shards


@contextmanager
def stream_panel(
    store: Store,
    monitor: MonitorConfig,
    granularity: str,
    start: datetime,
    end: datetime,
    cost_column: str,
    *,
    rows: int,
) -> Iterator[PanelStream]:
    """The monitor's series over [start, end) in shards of at most ``rows`` series (see the module doc)."""
    if cost_column not in COST_COLUMNS:
        raise UserError(f"detection.cost_column must be effective_cost, billed_cost or list_cost, not {cost_column}")
    with tempfile.TemporaryDirectory(prefix="spendwatch-panel-") as folder:
        series, recurs = _write(store, monitor, granularity, start, end, cost_column, Path(folder))
        shards = _shards(Path(folder), monitor.dimensions, start, granularity, len(columns(start, end, granularity)),
                         series, max(1, rows), recurs)  # fmt: skip
        yield PanelStream(series, shards)


def _write(
    store: Store,
    monitor: MonitorConfig,
    granularity: str,
    start: datetime,
    end: datetime,
    cost_column: str,
    folder: Path,
) -> tuple[int, bool]:
    """Write ``keys.parquet`` (id, d0…, currency) and ``values.parquet`` (id, ts, cost, recurring,
    described), both by id.

    Returns the number of series and whether any cell has a recurring dollar.
    Series are numbered in the order of their keys; the cost rows are sorted by that number, an
    integer — sorting them by the key strings themselves costs several times as much.
    """
    unit = "hour" if granularity == "hourly" else "day"
    dims = [f"{dimension_value_sql(d)} AS d{i}" for i, d in enumerate(monitor.dimensions)]
    keys = ", ".join([f"d{i}" for i in range(len(dims))] + ["currency"])
    scored, scored_params = monitor_clauses(monitor)
    clauses = ["charge_period_start >= ?", "charge_period_start < ?", *scored]
    grouped = (
        f"SELECT {', '.join(dims)}, billing_currency AS currency, date_trunc('{unit}', charge_period_start) AS ts, "
        f"sum({cost_column}) AS cost, sum({cost_column}) FILTER (WHERE charge_frequency = 'Recurring') AS recurring, "
        f"count(charge_frequency) AS described FROM cost_lines WHERE {' AND '.join(clauses)} GROUP BY ALL"
    )
    values, names = (str(folder / f).replace("'", "''") for f in ("values.parquet", "keys.parquet"))
    with store.read() as con:  # temporary tables live in this connection only, read-only store or not
        con.execute(f"CREATE TEMP TABLE panel_rows AS {grouped}", [start, end, *scored_params])
        con.execute(
            f"CREATE TEMP TABLE panel_series AS SELECT {keys}, row_number() OVER (ORDER BY {keys}) - 1 AS id "
            f"FROM (SELECT DISTINCT {keys} FROM panel_rows)"
        )
        con.execute(f"COPY (SELECT id, {keys} FROM panel_series ORDER BY id) TO '{names}' (FORMAT parquet)")
        con.execute(
            f"COPY (SELECT s.id, r.ts, r.cost, r.recurring, r.described > 0 AS described FROM panel_rows r "
            f"JOIN panel_series s USING ({keys}) ORDER BY s.id) "
            f"TO '{values}' (FORMAT parquet, ROW_GROUP_SIZE {_BATCH_ROWS})"
        )
        row = con.execute(
            "SELECT (SELECT count(*) FROM panel_series), "
            "(SELECT coalesce(bool_or(coalesce(recurring, 0) <> 0), false) FROM panel_rows)"
        ).fetchone()
    return (int(row[0]), bool(row[1])) if row else (0, False)


def _shards(
    folder: Path,
    dimensions: list[str],
    start: datetime,
    granularity: str,
    n_steps: int,
    series: int,
    rows: int,
    recurs: bool,
) -> Iterator[PanelShard]:
    """Blocks of ``rows`` series (ids lo … hi-1): each batch of cost rows is scattered into the block it belongs to."""
    if series == 0:
        return
    start_us = int(start.timestamp() * 1_000_000)
    step_us = int(step_of(granularity) / timedelta(microseconds=1))
    names = _exactly(pq.ParquetFile(folder / "keys.parquet").iter_batches(batch_size=rows), rows)
    lo = 0
    block = _Block(next(names), dimensions, n_steps, recurs)
    for batch in pq.ParquetFile(folder / "values.parquet").iter_batches(batch_size=_BATCH_ROWS):
        ids = batch.column("id").to_numpy(zero_copy_only=False).astype(np.int64)
        stamps = pc.cast(batch.column("ts"), pa.timestamp("us", tz="UTC")).to_numpy(zero_copy_only=False)
        column = (stamps.astype(np.int64) - start_us) // step_us
        cost = batch.column("cost").to_numpy(zero_copy_only=False)
        recurring = batch.column("recurring").to_numpy(zero_copy_only=False).astype(np.float64)  # None → NaN
        described = batch.column("described").to_numpy(zero_copy_only=False).astype(bool)
        begin = 0
        while begin < len(ids):
            # rows are sorted by id: the ones of this block run up to the first id past it
            end = int(np.searchsorted(ids, lo + rows, side="left"))
            part = slice(begin, end)
            block.scatter(ids[part] - lo, column[part], cost[part], recurring[part], described[part])
            if end == len(ids):
                break
            yield block.shard(lo)
            lo += rows
            block = _Block(next(names), dimensions, n_steps, recurs)
            begin = end
    yield block.shard(lo)


def _exactly(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """The same rows re-cut into tables of exactly ``rows`` rows (the last one shorter)."""
    held: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        held.append(batch)
        count += batch.num_rows
        while count >= rows:
            table = pa.Table.from_batches(held)
            yield table.slice(0, rows)
            rest = table.slice(rows)
            held, count = rest.to_batches(), rest.num_rows
    if count:
        yield pa.Table.from_batches(held)


class _Block:
    """One shard being filled: its series' keys and a dense (series × steps) block of costs."""

    def __init__(self, names: pa.Table, dimensions: list[str], n_steps: int, recurs: bool) -> None:
        heads = names.to_pylist()
        self.dimensions = [{d: str(head[f"d{i}"]) for i, d in enumerate(dimensions)} for head in heads]
        self.currencies = [str(head["currency"]) for head in heads]
        self.values = np.zeros((len(heads), n_steps))
        self.first_seen = np.full(len(heads), n_steps, dtype=np.int64)
        # only a panel with a recurring dollar somewhere pays for a second block
        self.declared = np.full((len(heads), n_steps), np.nan) if recurs else None

    def scatter(
        self, series: np.ndarray, column: np.ndarray, cost: np.ndarray, recurring: np.ndarray, described: np.ndarray
    ) -> None:
        self.values[series, column] = cost  # one row per series and step: the query grouped them
        np.minimum.at(self.first_seen, series, column)
        if self.declared is not None:
            self.declared[series[described], column[described]] = np.nan_to_num(recurring[described])

    def shard(self, first: int) -> PanelShard:
        n_steps = self.values.shape[1]
        self.values[np.arange(n_steps)[None, :] < self.first_seen[:, None]] = np.nan
        keys = [series_key(d, c) for d, c in zip(self.dimensions, self.currencies, strict=True)]
        declared = self.declared
        if declared is not None and not (np.nan_to_num(declared) != 0).any():
            declared = None  # no recurring dollar in these series: the same decisions, one block less to ship
        return PanelShard(first, keys, self.dimensions, self.currencies, self.values, declared)
