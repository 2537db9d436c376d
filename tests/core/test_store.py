"""The store: migrations, idempotent replacement per source and period, atomic loads, two processes."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from spendwatch.errors import StoreError
from spendwatch.store import SCHEMA_VERSION, Store
from spendwatch.store.store import _migrations
from tests.doubles.clock import FixedClock
from tests.doubles.lines import cost_lines
from tests.doubles.waits import PATIENCE

NOV = datetime(2026, 11, 1, tzinfo=UTC)
DEC = datetime(2026, 12, 1, tzinfo=UTC)


def total(store: Store, source: str | None = None) -> float:
    sql = "SELECT coalesce(sum(billed_cost), 0) FROM cost_lines" + (" WHERE source = ?" if source else "")
    return float(store.query(sql, [source] if source else [])[0][0])


def test_a_new_store_is_migrated_to_the_current_version(tmp_path: Path, clock: FixedClock) -> None:
    store = Store(tmp_path / "s.duckdb", clock=clock)
    assert store.migrate() == SCHEMA_VERSION
    assert store.schema_version() == SCHEMA_VERSION
    assert Store(tmp_path / "s.duckdb", clock=clock).migrate() == SCHEMA_VERSION  # re-opening is a no-op
    rows = store.query("SELECT count(*) FROM schema_version")
    # One row per shipped migration (numbers are reserved per issue, so they need not be contiguous).
    assert rows[0][0] == len(_migrations())


def test_a_store_from_a_newer_spendwatch_is_refused(tmp_path: Path, clock: FixedClock) -> None:
    path = tmp_path / "s.duckdb"
    Store(path, clock=clock).migrate()
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO schema_version VALUES (?, now())", [SCHEMA_VERSION + 1])
    con.close()
    with pytest.raises(StoreError, match="newer than this spendwatch"):
        Store(path, clock=clock).migrate()


def test_reloading_a_period_replaces_it_and_never_double_counts(tmp_path: Path, clock: FixedClock) -> None:
    store = Store(tmp_path / "s.duckdb", clock=clock)
    first = cost_lines([{"day": "2026-11-03", "cost": 10.0}, {"day": "2026-11-04", "cost": 20.0}])
    store.replace_cost_lines("a", NOV, DEC, first)
    store.replace_cost_lines("a", NOV, DEC, first)
    assert total(store) == pytest.approx(30.0)
    restated = cost_lines([{"day": "2026-11-03", "cost": 12.5}, {"day": "2026-11-04", "cost": 20.0}])
    result = store.replace_cost_lines("a", NOV, DEC, restated)
    assert result.replaced_rows == 2 and result.rows == 2
    assert total(store) == pytest.approx(32.5)


def test_replacement_touches_only_its_own_source_and_period(tmp_path: Path, clock: FixedClock) -> None:
    store = Store(tmp_path / "s.duckdb", clock=clock)
    store.replace_cost_lines("a", NOV, DEC, cost_lines([{"day": "2026-11-03", "cost": 1.0}]))
    store.replace_cost_lines("b", NOV, DEC, cost_lines([{"day": "2026-11-03", "cost": 2.0}]))
    october = datetime(2026, 10, 1, tzinfo=UTC)
    store.replace_cost_lines("a", october, NOV, cost_lines([{"day": "2026-10-30", "cost": 4.0}]))
    store.replace_cost_lines("a", NOV, DEC, cost_lines([{"day": "2026-11-05", "cost": 8.0}]))
    assert total(store, "a") == pytest.approx(12.0)
    assert total(store, "b") == pytest.approx(2.0)


def test_lines_outside_the_period_are_refused_before_anything_is_written(tmp_path: Path, clock: FixedClock) -> None:
    store = Store(tmp_path / "s.duckdb", clock=clock)
    store.replace_cost_lines("a", NOV, DEC, cost_lines([{"day": "2026-11-03", "cost": 5.0}]))
    stray = cost_lines([{"day": "2026-11-03", "cost": 1.0}, {"day": "2026-12-02", "cost": 1.0}])
    with pytest.raises(StoreError, match="outside the period"):
        store.replace_cost_lines("a", NOV, DEC, stray)
    assert total(store) == pytest.approx(5.0)


def test_a_load_failing_half_way_leaves_the_previous_data(tmp_path: Path, clock: FixedClock) -> None:
    store = Store(tmp_path / "s.duckdb", clock=clock)
    store.replace_cost_lines("a", NOV, DEC, cost_lines([{"day": "2026-11-03", "cost": 5.0}]))
    good = cost_lines([{"day": "2026-11-04", "cost": 7.0}])
    with store.transaction() as con:  # prove the transaction wrapper rolls back on error
        con.execute("DELETE FROM cost_line_rows")
    assert total(store) == 0.0
    store.replace_cost_lines("a", NOV, DEC, cost_lines([{"day": "2026-11-03", "cost": 5.0}]))
    with pytest.raises(RuntimeError, match="boom"), store.transaction() as con:
        con.execute("DELETE FROM cost_line_rows WHERE source = 'a'")
        con.register("incoming", good)
        con.execute(
            "INSERT INTO cost_line_rows (source, batch_id, dim_id, charge_period_start, charge_period_end, "
            "billed_cost, effective_cost) SELECT 'a', 'x', 1, charge_period_start, charge_period_end, "
            "billed_cost, effective_cost FROM incoming"
        )
        raise RuntimeError("boom")
    assert total(store) == pytest.approx(5.0)


def test_a_bad_value_inside_the_insert_rolls_the_whole_period_back(tmp_path: Path, clock: FixedClock) -> None:
    store = Store(tmp_path / "s.duckdb", clock=clock)
    store.replace_cost_lines("a", NOV, DEC, cost_lines([{"day": "2026-11-03", "cost": 5.0}]))
    bad = cost_lines([{"day": "2026-11-04", "cost": 7.0}])
    # A NOT NULL column arriving null is only caught by the database, after the DELETE has run.
    columns = {name: bad.column(name) for name in bad.column_names}
    columns["provider"] = pa.array([None], type=pa.string())
    schema = pa.schema([f.with_nullable(True) for f in bad.schema])
    sneaky = pa.Table.from_pydict(columns, schema=schema)
    with pytest.raises(Exception, match="provider"):
        store.replace_cost_lines("a", NOV, DEC, sneaky)
    assert total(store) == pytest.approx(5.0)


def test_jobs_upsert_keeps_first_seen_and_updates_state(tmp_path: Path, clock: FixedClock) -> None:
    from spendwatch.store.schema import JOB_SCHEMA, conform

    store = Store(tmp_path / "s.duckdb", clock=clock)

    def job(state: str, cost: float) -> pa.Table:
        row = {
            "platform": "bigquery",
            "job_id": "j1",
            "provider": "gcp",
            "state": state,
            "estimated_cost": cost,
            "billing_currency": "USD",
            "user": "a@example.com",
        }
        return conform(pa.Table.from_pylist([row]), JOB_SCHEMA)

    store.upsert_jobs("src", job("RUNNING", 1.0))
    first = clock.now()
    clock.advance(minutes=5)
    store.upsert_jobs("src", job("DONE", 3.0))
    rows = store.query("SELECT state, estimated_cost, first_seen, last_seen FROM jobs")
    assert len(rows) == 1
    state, cost, first_seen, last_seen = rows[0]
    assert (state, cost) == ("DONE", 3.0)
    assert first_seen == first and last_seen == clock.now()


# -- two processes -------------------------------------------------------------------------------

WRITER = """
import sys, time
from datetime import UTC, datetime
from pathlib import Path
from spendwatch.store import Store
from tests.doubles.lines import cost_lines
store = Store(Path(sys.argv[1]), lock_timeout=120)
nov, dec = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
lines = cost_lines([{"day": f"2026-11-{d:02d}", "cost": 1.0} for d in range(1, 31)] * 200)
began, loads = time.monotonic(), 0
while loads < 3 or time.monotonic() - began < float(sys.argv[2]):
    store.replace_cost_lines("daemon", nov, dec, lines)
    loads += 1
Path(sys.argv[3]).write_text("done")
print(loads)
"""


def _cli_side(path: str, done: str, queue: multiprocessing.Queue[object]) -> None:
    """What a person does while the daemon loads: read incidents, change a setting."""
    from spendwatch.store import Store

    store = Store(Path(path), lock_timeout=120)
    reads = writes = 0
    give_up = time.monotonic() + 100
    try:
        while (reads < 3 or not Path(done).exists()) and time.monotonic() < give_up:
            total_rows = store.query("SELECT count(*) FROM cost_lines")[0][0]
            assert total_rows in (0, 6000), total_rows  # never a half-replaced period
            store.query("SELECT * FROM anomalies ORDER BY id DESC LIMIT 10")
            reads += 1
            store.set_setting("killswitch.paused", str(writes), actor="cli")
            writes += 1
        queue.put(("ok", reads, writes))
    except Exception as exc:  # reported to the parent, which fails the test
        queue.put(("error", repr(exc), 0))


def test_the_cli_reads_and_writes_while_another_process_loads(tmp_path: Path) -> None:
    path = tmp_path / "shared.duckdb"
    Store(path).migrate()
    repo = Path(__file__).resolve().parents[2]
    done = tmp_path / "writer-done"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), "2", str(done)], cwd=repo, stdout=subprocess.PIPE, text=True
    )
    queue: multiprocessing.Queue[object] = multiprocessing.get_context("spawn").Queue()
    reader = multiprocessing.get_context("spawn").Process(target=_cli_side, args=(str(path), str(done), queue))
    reader.start()
    reader.join(timeout=120)
    out, _ = writer.communicate(timeout=120)
    status, reads, writes = queue.get(timeout=PATIENCE)  # type: ignore[misc]
    assert status == "ok", reads
    assert writer.returncode == 0
    assert int(out.strip()) >= 3, "the daemon side kept loading"
    assert reads >= 3 and writes >= 3, "the CLI side kept working"
    store = Store(path)
    assert store.get_setting("killswitch.paused") == str(writes - 1)
    assert store.query("SELECT count(*) FROM cost_lines")[0][0] == 6000


def test_a_zero_byte_store_file_is_a_new_store(tmp_path: Path, clock: FixedClock) -> None:
    """A process stopped before DuckDB wrote a header leaves an empty file: nothing to lose, start afresh."""
    path = tmp_path / "s.duckdb"
    path.write_bytes(b"")
    store = Store(path, clock=clock)
    assert store.migrate() == SCHEMA_VERSION
    assert total(store) == 0.0


def test_migration_numbers_are_contiguous() -> None:
    """The runner applies versions above a store's newest: a gap filled later would never be applied."""
    versions = [version for version, _ in _migrations()]
    assert versions == list(range(1, len(versions) + 1))
