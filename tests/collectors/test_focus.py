"""The ``focus`` source: real FOCUS sample data, generated exports, restatements and bad files."""

from __future__ import annotations

import csv
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from spendwatch.cli import main
from spendwatch.collect import collect_source
from spendwatch.collectors.focus import FocusReader, FocusSourceConfig
from spendwatch.errors import InputError
from spendwatch.store import Store
from tests.doubles.clock import FixedClock
from tests.doubles.focus_files import focus_row, month_rows, write_csv, write_parquet


def store_at(tmp_path: Path, clock: FixedClock) -> Store:
    return Store(tmp_path / "store.duckdb", clock=clock)


def totals(store: Store) -> dict[tuple[str, str], float]:
    rows = store.query("SELECT provider, charge_category, sum(billed_cost) FROM cost_lines GROUP BY ALL")
    return {(p, c): round(float(v), 9) for p, c, v in rows}


def source(path: Path | str, **extra: object) -> FocusSourceConfig:
    return FocusSourceConfig(name="exports", path=str(path), **extra)  # type: ignore[arg-type]


# -- the FinOps Foundation's FOCUS 1.0 sample, read in place --------------------------------------


def test_the_focus_sample_loads_with_totals_matching_the_file(
    shared_dir: Path, tmp_path: Path, clock: FixedClock
) -> None:
    sample = shared_dir / "real-data" / "focus-sample-1.0" / "focus_sample.csv"
    expected: dict[str, Decimal] = defaultdict(Decimal)
    with sample.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        expected[row["ProviderName"]] += Decimal(row["BilledCost"])
    store = store_at(tmp_path, clock)
    run = collect_source(source(sample), store, clock)
    assert run.error is None and run.cost_rows == len(rows) == 1000
    loaded = dict(store.query("SELECT provider, sum(billed_cost) FROM cost_lines GROUP BY 1"))
    names = {"AWS": "aws", "Microsoft": "azure", "Oracle": "oci"}
    assert set(loaded) == {names[p] for p in expected}
    for provider, amount in expected.items():
        assert loaded[names[provider]] == pytest.approx(float(amount), rel=1e-12, abs=1e-12)
    # NULL strings are nulls, JSON tags are maps, and "Usage-based" is normalised.
    nulls = store.query("SELECT count(*) FROM cost_lines WHERE resource_name IS NULL")[0][0]
    assert nulls == sum(1 for r in rows if r["ResourceName"] in ("NULL", ""))
    tagged = store.query("SELECT count(*) FROM cost_lines WHERE tags['environment'] IS NOT NULL")[0][0]
    assert tagged == sum(1 for r in rows if '"environment"' in r["Tags"])
    assert store.query("SELECT DISTINCT charge_frequency FROM cost_lines WHERE charge_frequency ILIKE 'usage%'") == [
        ("Usage-Based",)
    ]


# -- generated exports -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["export.csv", "export.csv.gz", "export.parquet"])
def test_each_file_format_loads_the_same_lines(tmp_path: Path, clock: FixedClock, name: str) -> None:
    rows = [*month_rows("2026-10", 31, 3.5), focus_row("2026-10-15", -20.0, ChargeCategory="Credit")]
    path = tmp_path / "exports" / name
    (write_parquet if name.endswith(".parquet") else write_csv)(path, rows)
    store = store_at(tmp_path, clock)
    run = collect_source(source(path), store, clock)
    assert run.error is None, run.error
    assert totals(store) == {("aws", "Usage"): pytest.approx(108.5), ("aws", "Credit"): pytest.approx(-20.0)}
    owners = store.query("SELECT DISTINCT owner, job_id FROM cost_lines")
    assert owners == [("ana@example.com", "nightly-etl")]


def test_a_folder_and_a_glob_read_every_month(tmp_path: Path, clock: FixedClock) -> None:
    write_csv(tmp_path / "exports" / "2026-09" / "part-0.csv", month_rows("2026-09", 30, 1.0))
    write_parquet(tmp_path / "exports" / "2026-10" / "part-0.parquet", month_rows("2026-10", 31, 2.0))
    (tmp_path / "exports" / "README.txt").write_text("not an export")
    for spec in (tmp_path / "exports", f"{tmp_path}/exports/**/part-*"):
        store = Store(tmp_path / f"s{abs(hash(str(spec)))}.duckdb", clock=clock)
        run = collect_source(source(spec), store, clock)
        assert run.error is None and run.periods == 2
        assert totals(store)[("aws", "Usage")] == pytest.approx(30.0 + 62.0)


def test_restated_exports_replace_the_month_and_reloads_change_nothing(tmp_path: Path, clock: FixedClock) -> None:
    path = tmp_path / "exports" / "current.csv"
    write_csv(path, month_rows("2026-11", 20, 10.0))
    store = store_at(tmp_path, clock)
    assert collect_source(source(path), store, clock).cost_rows == 20
    first = totals(store)
    assert collect_source(source(path), store, clock).cost_rows == 0  # unchanged files are skipped
    assert totals(store) == first
    restated = month_rows("2026-11", 20, 10.0)
    restated[4] = focus_row("2026-11-05", 99.0)  # a restated line
    restated.append(focus_row("2026-11-21", 10.0))  # a late line
    write_csv(path, restated)
    run = collect_source(source(path), store, clock)
    assert run.cost_rows == 21 and run.replaced_rows == 20
    assert totals(store)[("aws", "Usage")] == pytest.approx(200.0 + 89.0 + 10.0)
    # Loading the same data twice leaves identical totals, even when forced past the fingerprint.
    store.set_state("exports", "fingerprint", "forced")
    collect_source(source(path), store, clock)
    assert totals(store)[("aws", "Usage")] == pytest.approx(299.0)
    assert store.query("SELECT count(*) FROM cost_lines")[0][0] == 21


def test_snake_case_and_focus_1_2_provider_columns_are_understood(tmp_path: Path, clock: FixedClock) -> None:
    rows = [
        {
            "billed_cost": "4", "effective_cost": "3", "billing_currency": "EUR", "charge_category": "usage",
            "charge_period_start": "2026-11-02 00:00:00", "charge_period_end": "2026-11-02 01:00:00",
            "service_provider_name": "Google Cloud", "service_name": "BigQuery", "sub_account_id": "proj-1",
        }
    ]  # fmt: skip
    path = write_csv(tmp_path / "gcp.csv", rows, columns=list(rows[0]))
    table = FocusReader(["owner"], ["job"]).read_file(path)
    assert table.column("provider").to_pylist() == ["gcp"]
    assert table.column("charge_category").to_pylist() == ["Usage"]
    assert table.column("effective_cost").to_pylist() == [3.0]
    assert table.column("charge_period_start").to_pylist() == [datetime(2026, 11, 2, tzinfo=UTC)]


# -- bad files -------------------------------------------------------------------------------------

BAD = [
    ({"ChargePeriodStart": "yesterday"}, "row 3, column ChargePeriodStart: 'yesterday' is not a timestamp"),
    ({"BilledCost": "12,50"}, "row 3, column BilledCost: '12,50' is not a number"),
    ({"ChargeCategory": "Fee"}, "row 3, column ChargeCategory: 'Fee' is not one of"),
    ({"Tags": "{not json"}, "row 3, column Tags: tags are not a JSON object"),
    ({"Tags": "[1, 2]"}, "row 3, column Tags: tags are not a JSON object"),
    (
        {"ChargePeriodEnd": "2026-11-02T00:00:00Z"},
        "row 3, column ChargePeriodStart: charge period ends before it starts",
    ),
    ({"BillingCurrency": "NULL"}, "row 3, column BillingCurrency: empty value in a required column"),
]


@pytest.mark.parametrize(("change", "message"), BAD)
def test_a_bad_value_names_file_row_and_column(tmp_path: Path, change: dict[str, str], message: str) -> None:
    rows = month_rows("2026-11", 5, 1.0)
    rows[2] = {**rows[2], **change}
    path = write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(InputError) as caught:
        FocusReader(["owner"], ["job"]).read_file(path)
    assert str(caught.value) == f"{path}: {message}" or str(caught.value).startswith(f"{path}: {message}")
    assert "\n" not in str(caught.value)


def test_missing_required_columns_are_named(tmp_path: Path) -> None:
    columns = [c for c in month_rows("2026-11", 1, 1.0)[0] if c not in ("BilledCost", "ProviderName")]
    path = write_csv(tmp_path / "bad.csv", month_rows("2026-11", 2, 1.0), columns=columns)
    with pytest.raises(InputError, match=r"bad\.csv: missing required FOCUS column\(s\): BilledCost, ProviderName"):
        FocusReader([], []).read_file(path)


def test_a_truncated_gzip_is_a_clear_error(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "cut.csv.gz", month_rows("2026-11", 300, 1.0))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(InputError, match=r"cut\.csv\.gz: cannot read the file"):
        FocusReader([], []).read_file(path)


def test_one_bad_file_means_nothing_of_the_run_is_stored(tmp_path: Path, clock: FixedClock) -> None:
    store = store_at(tmp_path, clock)
    folder = tmp_path / "exports"
    write_csv(folder / "a.csv", month_rows("2026-10", 31, 1.0))
    collect_source(source(folder), store, clock)
    before = totals(store)
    write_csv(folder / "a.csv", month_rows("2026-10", 31, 5.0))  # a good restatement …
    bad = month_rows("2026-11", 3, 1.0)
    bad[1]["BilledCost"] = "n/a"
    write_csv(folder / "b.csv", bad)  # … next to a broken file
    run = collect_source(source(folder), store, clock)
    assert run.error is not None and "b.csv: row 2, column BilledCost" in run.error
    assert run.user_error
    assert totals(store) == before


def test_cli_collect_on_a_bad_file_exits_2_with_one_line(tmp_path: Path) -> None:
    rows = month_rows("2026-11", 3, 1.0)
    rows[0]["ChargePeriodStart"] = "soon"
    write_csv(tmp_path / "exports" / "bad.csv", rows)
    config = tmp_path / "sw.yaml"
    config.write_text("store: {path: s.duckdb}\nsources:\n  - {name: exports, type: focus, path: exports}\n")
    result = CliRunner().invoke(main, ["-c", str(config), "collect"])
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("spendwatch: error:")]
    assert len(errors) == 1 and "bad.csv: row 1, column ChargePeriodStart" in errors[0]
    assert "Traceback" not in result.output
    assert Store(tmp_path / "s.duckdb").query("SELECT count(*) FROM cost_lines")[0][0] == 0


def test_no_files_at_the_path_is_a_user_error(tmp_path: Path, clock: FixedClock) -> None:
    run = collect_source(source(tmp_path / "empty"), store_at(tmp_path, clock), clock)
    assert run.user_error and "no FOCUS files" in (run.error or "")
