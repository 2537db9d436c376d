"""Bad files: FOCUS CSV and Parquet exports, and backtest CSVs. Each names the file and the row/column."""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tests.doubles.focus_files import COLUMNS, focus_row, month_rows
from tests.reliability.corpus import Build, Case, Workspace, case

Rows = list[dict[str, Any]]


def csv_text(rows: Rows, columns: list[str] | None = None) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns or COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def rows_with(index: int, **change: Any) -> Rows:
    """Five good November rows with row ``index + 1`` changed."""
    rows = month_rows("2026-11", 5, 1.0)
    rows[index] = {**rows[index], **change}
    return rows


def focus(files: dict[str, str | bytes]) -> Build:
    """A second FOCUS source ``bad`` reading ``files``; ``collect --source bad``."""

    def build(workspace: Workspace) -> list[str]:
        (workspace.root / "bad").mkdir(exist_ok=True)
        for name, data in files.items():
            workspace.write(f"bad/{name}", data)
        workspace.with_sources("  - {name: bad, type: focus, path: bad}\n")
        return ["-c", str(workspace.config), "collect", "--source", "bad"]

    return build


def focus_csv(id: str, text: str | bytes, *expect: str, name: str = "export.csv") -> Case:
    return case("focus-csv", id, focus({name: text}), name, *expect)


def bad_value(id: str, column: str, value: str, problem: str) -> Case:
    return focus_csv(id, csv_text(rows_with(2, **{column: value})), f"row 3, column {column}", problem)


def edit_lines(text: str, edit: Callable[[list[str]], None]) -> str:
    lines = text.splitlines()
    edit(lines)
    return "\n".join(lines) + "\n"


GOOD_30 = csv_text(month_rows("2026-11", 30, 1.0))


def _extra_field_row_20(lines: list[str]) -> None:
    lines[20] += ",surplus"


def _short_row_7(lines: list[str]) -> None:
    lines[7] = lines[7].rsplit(",", 1)[0]


CSV_CASES: list[Case] = [
    bad_value("timestamp-words", "ChargePeriodStart", "yesterday", "'yesterday' is not a timestamp"),
    bad_value("timestamp-epoch-text", "ChargePeriodStart", "1793000000", "is not a timestamp"),
    bad_value("timestamp-bad-offset", "ChargePeriodStart", "2026-11-03T00:00:00+99:00", "is not a timestamp"),
    bad_value("timestamp-feb-30", "ChargePeriodStart", "2026-02-30T00:00:00Z", "is not a timestamp"),
    bad_value("year-9999", "ChargePeriodStart", "9999-12-31T00:00:00Z", "outside the years 2000-2099"),
    bad_value("year-1899", "ChargePeriodStart", "1899-11-03T00:00:00Z", "outside the years"),
    focus_csv(
        "end-before-start",
        csv_text(rows_with(2, ChargePeriodEnd="2026-11-02T00:00:00Z")),
        "row 3, column ChargePeriodStart",
        "ends before it starts",
    ),
    bad_value("end-year-9999", "ChargePeriodEnd", "9999-12-31T00:00:00Z", "outside the years"),
    bad_value("cost-empty", "BilledCost", "", "empty value in a required column"),
    bad_value("currency-null", "BillingCurrency", "NULL", "empty value in a required column"),
    bad_value("cost-comma", "BilledCost", "12,50", "'12,50' is not a number"),
    bad_value("cost-with-unit", "BilledCost", "12.5 USD", "is not a number"),
    bad_value("cost-infinity", "BilledCost", "Infinity", "'Infinity' is not a finite number"),
    bad_value("cost-1e400", "BilledCost", "1e400", "not a finite number"),
    bad_value("cost-minus-infinity", "BilledCost", "-Infinity", "not a finite number"),
    bad_value("cost-nan", "BilledCost", "NaN", "is not a number"),
    bad_value("cost-absurd", "BilledCost", "1e300", "not a plausible amount"),
    bad_value("effective-inf", "EffectiveCost", "inf", "not a finite number"),
    bad_value("list-cost-words", "ListCost", "free", "'free' is not a number"),
    bad_value("category", "ChargeCategory", "Fee", "'Fee' is not one of"),
    bad_value("frequency", "ChargeFrequency", "Sometimes", "'Sometimes' is not one of"),
    bad_value("tags-not-json", "Tags", "{not json", "tags are not a JSON object"),
    bad_value("tags-a-list", "Tags", "[1, 2]", "tags are not a JSON object"),
    focus_csv(
        "missing-columns",
        csv_text(month_rows("2026-11", 2, 1.0), [c for c in COLUMNS if c not in ("BilledCost", "ProviderName")]),
        "missing required FOCUS column(s): BilledCost, ProviderName",
    ),
    focus_csv("utf-16", GOOD_30.encode("utf-16"), "UTF-16", "not UTF-8"),
    focus_csv("utf-32", GOOD_30.encode("utf-32"), "UTF-32"),
    focus_csv(
        "latin-1-value",
        csv_text(rows_with(3, SubAccountName="Café")).encode("latin-1"),
        "line 5",
        "not UTF-8",
    ),
    focus_csv("binary", b"\x00\x01garbage\x00" * 64, "not a text file"),
    focus_csv("extra-field-row-20", edit_lines(GOOD_30, _extra_field_row_20), "row 20", "20 fields", "header has 19"),
    focus_csv("short-row-7", edit_lines(GOOD_30, _short_row_7), "row 7", "18 fields"),
    focus_csv("empty-file", "", "cannot read the file"),
    focus_csv("truncated-gzip", gzip.compress(GOOD_30.encode())[:200], "cannot read the file", name="export.csv.gz"),
    focus_csv("not-gzip", GOOD_30, "cannot read the file", name="export.csv.gz"),
]


def empty_folder(workspace: Workspace) -> list[str]:
    (workspace.root / "bad").mkdir()
    workspace.write("bad/readme.txt", "no exports here")
    workspace.with_sources("  - {name: bad, type: focus, path: bad}\n")
    return ["-c", str(workspace.config), "collect", "--source", "bad"]


def second_file_bad(workspace: Workspace) -> list[str]:
    """A good restatement of October next to a broken November: nothing of the run may be stored."""
    workspace.write("base/2026-10.csv", csv_text(month_rows("2026-10", 31, 9.0)))
    workspace.write("base/2026-11b.csv", csv_text(rows_with(1, BilledCost="n/a")))
    return ["-c", str(workspace.config), "collect"]


CSV_CASES += [
    case("focus-csv", "no-export-files", empty_folder, "no FOCUS files", "bad"),
    case("focus-csv", "restatement-beside-a-bad-file", second_file_bad, "2026-11b.csv", "row 2, column BilledCost"),
]


# -- Parquet -----------------------------------------------------------------------------------------


def typed_table(rows: Rows) -> pa.Table:
    """FOCUS rows as typed Parquet columns (doubles, UTC timestamps), as AWS Data Exports writes them."""
    table = pa.Table.from_pylist(rows)
    for name in ("BilledCost", "EffectiveCost", "ListCost"):
        table = table.set_column(table.column_names.index(name), name, table.column(name).cast(pa.float64()))
    for name in ("ChargePeriodStart", "ChargePeriodEnd"):
        values = [s.replace("Z", "+00:00") for s in table.column(name).to_pylist()]
        stamps = pa.array(values, pa.string()).cast(pa.timestamp("us", tz="UTC"))
        table = table.set_column(table.column_names.index(name), name, stamps)
    return table


def parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def replaced(column: str, values: pa.Array, rows: Rows | None = None) -> bytes:
    table = typed_table(rows or month_rows("2026-11", 3, 1.0))
    return parquet(table.set_column(table.column_names.index(column), column, values))


def focus_parquet(id: str, data: bytes, *expect: str) -> Case:
    return case("focus-parquet", id, focus({"export.parquet": data}), "export.parquet", *expect)


GOOD_PARQUET = parquet(typed_table(month_rows("2026-11", 30, 1.0)))
STAMP = pa.timestamp("us", tz="UTC")

PARQUET_CASES: list[Case] = [
    focus_parquet(
        "epoch-int64",
        replaced("ChargePeriodStart", pa.array([1793000000] * 3, pa.int64())),
        "column ChargePeriodStart",
        "int64 numbers, not timestamps",
    ),
    focus_parquet(
        "epoch-double",
        replaced("ChargePeriodEnd", pa.array([1.7e9] * 3, pa.float64())),
        "column ChargePeriodEnd",
        "double numbers",
    ),
    focus_parquet(
        "category-integer",
        replaced("ChargeCategory", pa.array([1, 2, 3], pa.int64())),
        "row 1, column ChargeCategory",
        "'1' is not one of",
    ),
    focus_parquet(
        "tags-list",
        replaced("Tags", pa.array([["a"], ["b"], None], pa.list_(pa.string()))),
        "column Tags",
        "list<",
    ),
    focus_parquet(
        "tags-struct",
        replaced("Tags", pa.array([{"a": "x"}, {"a": "y"}, None], pa.struct([("a", pa.string())]))),
        "column Tags",
        "struct<",
    ),
    focus_parquet(
        "tags-bad-json-bytes",
        replaced("Tags", pa.array([b"\xff\xfe", b"{}", None], pa.binary())),
        "column Tags",
    ),
    focus_parquet(
        "cost-infinite",
        replaced("BilledCost", pa.array([1.0, float("inf"), 1.0])),
        "row 2, column BilledCost",
        "not a finite number",
    ),
    focus_parquet(
        "cost-nan",
        replaced("BilledCost", pa.array([1.0, 1.0, float("nan")])),
        "row 3, column BilledCost",
        "empty value",
    ),
    focus_parquet(
        "cost-text",
        replaced("BilledCost", pa.array(["1.0", "abc", "2"])),
        "row 2, column BilledCost",
        "'abc' is not a number",
    ),
    focus_parquet(
        "cost-bool",
        replaced("BilledCost", pa.array([True, False, True])),
        "row 1, column BilledCost",
        "is not a number",
    ),
    focus_parquet(
        "year-2200",
        replaced("ChargePeriodStart", pa.array(["2200-01-01T00:00:00+00:00"] * 3).cast(STAMP)),
        "row 1, column ChargePeriodStart",
        "outside the years",
    ),
    focus_parquet(
        "end-before-start",
        replaced("ChargePeriodEnd", pa.array(["2026-10-01T00:00:00+00:00"] * 3).cast(STAMP)),
        "row 1, column ChargePeriodStart",
        "ends before it starts",
    ),
    focus_parquet(
        "currency-null",
        replaced("BillingCurrency", pa.array(["USD", None, "USD"])),
        "row 2, column BillingCurrency",
        "empty value",
    ),
    focus_parquet(
        "missing-category",
        parquet(typed_table(month_rows("2026-11", 3, 1.0)).drop_columns(["ChargeCategory"])),
        "missing required FOCUS column(s): ChargeCategory",
    ),
    focus_parquet("truncated", GOOD_PARQUET[: len(GOOD_PARQUET) // 2], "cannot read the file"),
    focus_parquet("text-not-parquet", GOOD_30.encode(), "cannot read the file"),
    focus_parquet("zero-bytes", b"", "cannot read the file"),
]


# -- backtest CSVs -----------------------------------------------------------------------------------

HEADER = "series_id,timestamp,cost\n"
DAILY = HEADER + "".join(f"a,2026-11-{d:02d},{10 + d}\n" for d in range(1, 21))


def backtest(text: str | bytes, *extra: str, name: str = "series.csv") -> Build:
    def build(workspace: Workspace) -> list[str]:
        path = workspace.write(name, text)
        return ["backtest", str(path), "-o", str(workspace.root / "flags.csv"), *extra]

    return build


def bt(id: str, text: str | bytes, *expect: str, extra: tuple[str, ...] = ()) -> Case:
    return case("backtest", id, backtest(text, *extra), *expect, store="bytes")


def daily_with(row: int, line: str) -> str:
    lines = DAILY.splitlines()
    lines[row - 1] = line
    return "\n".join(lines) + "\n"


BACKTEST_CASES: list[Case] = [
    bt("empty", "", "series.csv", "row 1", "the file is empty"),
    bt("header-only", HEADER, "series.csv", "row 2", "no data rows"),
    bt("missing-cost-column", "series_id,timestamp\na,2026-11-01\n", "series.csv", "column 'cost'", "missing column"),
    bt("wrong-field-count", daily_with(6, "a,2026-11-05,1,extra"), "series.csv", "row 6", "wrong number of fields"),
    bt("month-13", daily_with(4, "a,2026-13-01,1"), "series.csv", "row 4, column 'timestamp'", "not a valid date"),
    bt("timestamp-words", daily_with(3, "a,yesterday,1"), "series.csv", "row 3, column 'timestamp'", "cannot parse"),
    bt("mixed-granularity", daily_with(5, "a,2026-11-04T03:00:00Z,1"), "row 5", "mixes granularities"),
    bt("duplicate-row", daily_with(5, "a,2026-11-02,1"), "series.csv", "column 'timestamp'", "duplicate row"),
    bt("cost-words", daily_with(7, "a,2026-11-06,lots"), "row 7, column 'cost'", "not a number: 'lots'"),
    bt("cost-inf", daily_with(7, "a,2026-11-06,inf"), "row 7, column 'cost'", "not a number"),
    bt("cost-nan", daily_with(7, "a,2026-11-06,NaN"), "row 7, column 'cost'"),
    bt("cost-empty", daily_with(7, "a,2026-11-06,"), "row 7, column 'cost'", "missing cost"),
    bt("series-id-empty", daily_with(2, ",2026-11-01,1"), "row 2, column 'series_id'", "empty series id"),
    bt(
        "span-1900-2200-hourly",
        HEADER + "a,1900-01-01T00:00:00Z,1\na,2200-01-01T00:00:00Z,2\n",
        "series.csv",
        "column 'timestamp'",
        "is a year mistyped?",
    ),
    bt("span-daily-millennium", daily_with(2, "a,1026-11-01,1"), "row 2, column 'timestamp'", "steps"),
    bt("latin-1", (HEADER + "caf\xe9,2026-11-01,1\n").encode("latin-1"), "series.csv", "not a UTF-8 text file"),
    bt("utf-16", DAILY.encode("utf-16"), "series.csv", "UTF-16"),
    bt("binary", b"\x00\x01\x02garbage" * 10, "series.csv", "not a text file"),
    bt("granularity-mismatch", DAILY, "--granularity hourly was given", extra=("--granularity", "hourly")),
    bt("granularity-unknown", DAILY, "--granularity", "'weekly' is not one of", extra=("--granularity", "weekly")),
    bt("sensitivity-negative", DAILY, "--sensitivity", "must be greater than 0", extra=("--sensitivity", "-1")),
    bt("sensitivity-zero", DAILY, "--sensitivity", "must be greater than 0", extra=("--sensitivity", "0")),
    bt("sensitivity-nan", DAILY, "--sensitivity", "not a finite number", extra=("--sensitivity", "nan")),
    bt("sensitivity-inf", DAILY, "--sensitivity", "not a finite number", extra=("--sensitivity", "inf")),
    bt("sensitivity-words", DAILY, "--sensitivity", "'high' is not a number", extra=("--sensitivity", "high")),
]


def missing_input(workspace: Workspace) -> list[str]:
    return ["backtest", str(workspace.root / "nowhere.csv"), "-o", str(workspace.root / "flags.csv")]


def input_folder(workspace: Workspace) -> list[str]:
    (workspace.root / "series.csv").mkdir()
    return ["backtest", str(workspace.root / "series.csv"), "-o", str(workspace.root / "flags.csv")]


def output_to(target: str, *, make: Callable[[Workspace], None] | None = None) -> Build:
    def build(workspace: Workspace) -> list[str]:
        if make is not None:
            make(workspace)
        path = workspace.write("series.csv", DAILY)
        return ["backtest", str(path), "-o", str(workspace.root / target)]

    return build


def _a_file_named_file(workspace: Workspace) -> None:
    workspace.write("file", "not a folder")


def _a_folder(workspace: Workspace) -> None:
    (workspace.root / "out").mkdir()


BACKTEST_CASES += [
    case("backtest", "input-missing", missing_input, "nowhere.csv", "file not found", store="bytes"),
    case("backtest", "input-is-a-folder", input_folder, "series.csv", "is a directory", store="bytes"),
    case(
        "backtest", "output-folder-missing", output_to("nodir/flags.csv"), "--output", "does not exist", store="bytes"
    ),
    case(
        "backtest",
        "output-parent-is-a-file",
        output_to("file/flags.csv", make=_a_file_named_file),
        "--output",
        "is a file, not a folder",
        store="bytes",
    ),
    case(
        "backtest", "output-is-a-folder", output_to("out", make=_a_folder), "--output", "is a directory", store="bytes"
    ),
]

CASES: list[Case] = [*CSV_CASES, *PARQUET_CASES, *BACKTEST_CASES]

# Keep the helpers importable for the other case modules (CUR files reuse the FOCUS rows).
__all__ = ["CASES", "csv_text", "focus_row", "json", "parquet", "typed_table"]
