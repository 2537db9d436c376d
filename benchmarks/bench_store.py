"""Why the store is DuckDB: load and series-query speed against SQLite (WAL) on the same cost lines.

Generates ``--series`` series × ``--days`` days × ``--lines`` lines per series-day (hourly-ish
line items), loads them into a spendwatch store (DuckDB, through ``Store.replace_cost_lines``) and
into a SQLite file in WAL mode with the same columns and an index on the period, then times the
query detection runs (a monitor's daily panel: GROUP BY three dimensions and the day) on both.
Also measures how long a CLI-side read waits while the daemon side is writing a month.

    python benchmarks/bench_store.py [--series 2000] [--days 365] [--lines 6]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spendwatch.store import Store
from spendwatch.store.schema import COST_LINE_SCHEMA, conform

PANEL_DUCKDB = (
    "SELECT provider, sub_account_id, service_name, billing_currency, date_trunc('day', charge_period_start) AS ts, "
    "sum(effective_cost) FROM cost_lines WHERE charge_category = 'Usage' AND charge_period_start >= ? "
    "GROUP BY ALL"
)
PANEL_SQLITE = (
    "SELECT provider, sub_account_id, service_name, billing_currency, substr(charge_period_start, 1, 10) AS ts, "
    "sum(effective_cost) FROM cost_lines WHERE charge_category = 'Usage' AND charge_period_start >= ? "
    "GROUP BY 1, 2, 3, 4, 5"
)


def generate(series: int, days: int, lines: int, start: datetime) -> pa.Table:
    rng = np.random.default_rng(1)
    n = series * days * lines
    series_index = np.repeat(np.arange(series), days * lines)
    day_index = np.tile(np.repeat(np.arange(days), lines), series)
    hour = rng.integers(0, 24, n)
    starts = np.datetime64(start.replace(tzinfo=None), "us") + (day_index * 24 + hour).astype("timedelta64[h]")
    cost = rng.gamma(2.0, 3.0, n)
    accounts = np.array([f"{100000000000 + i:012d}" for i in range(max(1, series // 20))])
    services = np.array([f"Service {i}" for i in range(20)])
    table = pa.table(
        {
            "provider": pa.array(np.where(series_index % 2 == 0, "aws", "gcp")),
            "sub_account_id": pa.array(accounts[(series_index // 20) % len(accounts)]),
            "service_name": pa.array(services[series_index % 20]),
            "charge_category": pa.array(np.full(n, "Usage")),
            "charge_period_start": pa.array(starts).cast(pa.timestamp("us", tz="UTC")),
            "charge_period_end": pa.array(starts + np.timedelta64(1, "h")).cast(pa.timestamp("us", tz="UTC")),
            "billed_cost": pa.array(cost),
            "effective_cost": pa.array(cost),
            "billing_currency": pa.array(np.full(n, "USD")),
        }
    )
    return conform(table, COST_LINE_SCHEMA)


def load_sqlite(path: Path, table: pa.Table) -> float:
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute(
        "CREATE TABLE cost_lines (provider TEXT, sub_account_id TEXT, service_name TEXT, charge_category TEXT, "
        "charge_period_start TEXT, effective_cost REAL, billing_currency TEXT)"
    )
    con.execute("CREATE INDEX by_start ON cost_lines (charge_period_start)")
    columns = ["provider", "sub_account_id", "service_name", "charge_category", "charge_period_start",
               "effective_cost", "billing_currency"]  # fmt: skip
    began = time.perf_counter()
    for batch in table.select(columns).to_batches(max_chunksize=200_000):
        data = batch.to_pydict()
        data["charge_period_start"] = [t.isoformat() for t in data["charge_period_start"]]
        con.executemany("INSERT INTO cost_lines VALUES (?, ?, ?, ?, ?, ?, ?)", zip(*data.values(), strict=True))
    con.commit()
    seconds = time.perf_counter() - began
    con.close()
    return seconds


def best_of(repeats: int, run: object) -> float:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        run()  # type: ignore[operator]
        times.append(time.perf_counter() - began)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=2000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--lines", type=int, default=6)
    args = parser.parse_args()
    start = datetime(2025, 1, 1, tzinfo=UTC)
    table = generate(args.series, args.days, args.lines, start)
    rows = table.num_rows
    print(f"{rows:,} cost lines: {args.series} series x {args.days} days x {args.lines} lines")
    with tempfile.TemporaryDirectory() as folder:
        store = Store(Path(folder) / "store.duckdb")
        store.migrate()
        began = time.perf_counter()
        end = start + timedelta(days=args.days)
        store.replace_cost_lines("bench", start, end, table)
        duck_load = time.perf_counter() - began
        sqlite_path = Path(folder) / "store.sqlite"
        lite_load = load_sqlite(sqlite_path, table)
        since = start + timedelta(days=args.days - 200)
        duck_query = best_of(3, lambda: store.query(PANEL_DUCKDB, [since]))
        lite = sqlite3.connect(sqlite_path)
        lite_query = best_of(3, lambda: lite.execute(PANEL_SQLITE, [since.replace(tzinfo=None).isoformat()]).fetchall())
        print(
            f"load:         duckdb {duck_load:6.2f}s ({rows / duck_load:,.0f} rows/s)   "
            f"sqlite {lite_load:6.2f}s ({rows / lite_load:,.0f} rows/s)   sqlite/duckdb = {lite_load / duck_load:.1f}x"
        )
        print(
            f"panel query:  duckdb {duck_query:6.3f}s   sqlite {lite_query:6.3f}s   "
            f"sqlite/duckdb = {lite_query / duck_query:.1f}x"
        )
        waits = cli_wait_while_loading(store, table, start, end)
        print(
            f"CLI read while the daemon replaces {rows:,} lines: median wait {statistics.median(waits):.3f}s, "
            f"max {max(waits):.3f}s over {len(waits)} reads"
        )


def cli_wait_while_loading(store: Store, table: pa.Table, start: datetime, end: datetime) -> list[float]:
    """Time small reads (what ``anomalies list`` does) while another thread keeps re-loading the data."""
    stop = threading.Event()

    def daemon() -> None:
        while not stop.is_set():
            store.replace_cost_lines("bench", start, end, table)

    writer = threading.Thread(target=daemon)
    writer.start()
    waits = []
    try:
        for _ in range(10):
            began = time.perf_counter()
            store.query("SELECT id, status FROM anomalies ORDER BY id DESC LIMIT 20")
            waits.append(time.perf_counter() - began)
            time.sleep(0.2)
    finally:
        stop.set()
        writer.join()
    return waits


if __name__ == "__main__":
    main()
