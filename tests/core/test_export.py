"""``costs export``: FOCUS files out that the ``focus`` source reads back to the same totals."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from spendwatch.cli import main
from spendwatch.collect import collect_source
from spendwatch.collectors.focus import FocusSourceConfig
from spendwatch.collectors.simulated import SimulatedSourceConfig
from spendwatch.errors import InputError
from spendwatch.export import export_focus
from spendwatch.store import Store
from tests.doubles.clock import FixedClock


@pytest.fixture
def filled(tmp_path: Path, clock: FixedClock) -> Store:
    store = Store(tmp_path / "s.duckdb", clock=clock)
    sim = SimulatedSourceConfig(name="sim", days=20, end=datetime(2026, 11, 10, tzinfo=UTC))
    assert collect_source(sim, store, clock).error is None
    return store


def totals(store: Store) -> dict[tuple[str, str, str], float]:
    rows = store.query(
        "SELECT provider, charge_category, coalesce(owner, ''), round(sum(billed_cost), 6) FROM cost_lines GROUP BY ALL"
    )
    return {(p, c, o): float(v) for p, c, o, v in rows}


@pytest.mark.parametrize("name", ["out.parquet", "out.csv"])
def test_an_export_reads_back_to_the_same_totals(filled: Store, tmp_path: Path, clock: FixedClock, name: str) -> None:
    out = tmp_path / name
    rows = export_focus(filled, out).rows
    assert rows == filled.query("SELECT count(*) FROM cost_lines")[0][0]
    back = Store(tmp_path / "back.duckdb", clock=clock)
    run = collect_source(FocusSourceConfig(name="back", path=str(out)), back, clock)
    assert run.error is None and run.cost_rows == rows
    assert totals(back) == totals(filled)


def test_parquet_exports_carry_focus_names_and_types(filled: Store, tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    export_focus(filled, out, provider="gcp", since=datetime(2026, 11, 1, tzinfo=UTC))
    table = pq.read_table(out)
    assert {"ProviderName", "BilledCost", "ChargePeriodStart", "Tags", "x_Owner"} <= set(table.column_names)
    assert set(table.column("ProviderName").to_pylist()) == {"Google Cloud"}
    assert min(table.column("ChargePeriodStart").to_pylist()) >= datetime(2026, 11, 1, tzinfo=UTC)


def test_a_bad_destination_is_a_user_error_and_writes_nothing(filled: Store, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"use \.parquet or \.csv"):
        export_focus(filled, tmp_path / "out.xlsx")
    with pytest.raises(InputError, match="does not exist"):
        export_focus(filled, tmp_path / "missing" / "out.csv")
    assert not [p.name for p in tmp_path.iterdir() if "out" in p.name]


def test_cli_export(filled: Store, tmp_path: Path) -> None:
    config = tmp_path / "sw.yaml"
    config.write_text("store: {path: s.duckdb}\nsources:\n  - {name: sim, type: simulated}\n")
    result = CliRunner().invoke(main, ["-c", str(config), "costs", "export", "-o", str(tmp_path / "x.csv")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "x.csv").read_text().startswith("AvailabilityZone,BilledCost,")
    bad = CliRunner().invoke(main, ["-c", str(config), "costs", "export", "-o", str(tmp_path / "x.json")])
    assert bad.exit_code == 2 and "use .parquet or .csv" in bad.output
