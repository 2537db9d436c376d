"""``focus``: FOCUS 1.x cost exports (CSV, CSV.gz, Parquet) from a file, a folder or a glob.

AWS Data Exports, GCP, Azure and OCI all write FOCUS. Column names are matched without regard to
case or underscores (``BilledCost`` = ``billed_cost``); ``x_`` extension columns are ignored; the
literal ``NULL`` is a null, as in the FinOps Foundation's sample data. Every file is read and checked
completely before anything is yielded, so a bad value anywhere means nothing of this run is stored,
and the error names the file, the row and the column.

Each run re-reads every matching file and replaces whole calendar months (FOCUS exports restate the
current and previous billing period in place). A run whose files have not changed (same names,
sizes and modification times) yields nothing.
"""

from __future__ import annotations

import csv
import glob
import gzip
import hashlib
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pydantic import Field

from spendwatch.collectors.base import SOURCES, Batch, CollectWindow, CostBatch, Source, SourceConfig
from spendwatch.collectors.tags import derive_column, parse_tags_json, tags_array
from spendwatch.config_types import ConfigPattern
from spendwatch.errors import InputError
from spendwatch.store.schema import (
    CHARGE_CATEGORIES,
    CHARGE_FREQUENCIES,
    COST_LINE_SCHEMA,
    MAX_AMOUNT,
    TIMESTAMP,
    conform,
)

NULL_STRINGS = ["", "NULL", "null", "None"]
_BLOCK_ROWS = 250_000
# Charge periods outside these years are a corrupt or mistyped value, not a bill (and 9999-12-31 has no
# following month to end a period in).
FIRST_YEAR, END_YEAR = 2000, 2100
_EARLIEST = pd.Timestamp(f"{FIRST_YEAR}-01-01", tz="UTC")
_LATEST = pd.Timestamp(f"{END_YEAR}-01-01", tz="UTC")

# FOCUS column → store column. Keys are normalised (lowercase, no underscores).
_COLUMNS: dict[str, str] = {
    "billingaccountid": "billing_account_id",
    "subaccountid": "sub_account_id",
    "subaccountname": "sub_account_name",
    "servicename": "service_name",
    "servicecategory": "service_category",
    "skuid": "sku_id",
    "regionid": "region_id",
    "resourceid": "resource_id",
    "resourcename": "resource_name",
    "chargedescription": "charge_description",
    # The rest of FOCUS 1.0's text columns, kept for ``costs export`` (1.0-preview names as aliases).
    "billingaccountname": "billing_account_name",
    "chargeclass": "charge_class",
    "availabilityzone": "availability_zone",
    "regionname": "region_name",
    "resourcetype": "resource_type",
    "skupriceid": "sku_price_id",
    "pricingcategory": "pricing_category",
    "pricingunit": "pricing_unit",
    "consumedunit": "consumed_unit",
    "commitmentdiscountid": "commitment_discount_id",
    "commitmentdiscountname": "commitment_discount_name",
    "commitmentdiscountcategory": "commitment_discount_category",
    "commitmentdiscountstatus": "commitment_discount_status",
    "commitmentdiscounttype": "commitment_discount_type",
    "invoiceissuername": "invoice_issuer_name",
    "invoiceissuer": "invoice_issuer_name",
    "publishername": "publisher_name",
    "publisher": "publisher_name",
}
# Unit prices are money (capped like costs); quantities are counts of anything (bytes, requests …).
_PRICES = {"listunitprice": "list_unit_price", "contractedunitprice": "contracted_unit_price"}
_AMOUNTS = {"contractedcost": "contracted_cost"}
_QUANTITIES = {"pricingquantity": "pricing_quantity", "consumedquantity": "consumed_quantity"}
_PERIODS = {"billingperiodstart": "billing_period_start", "billingperiodend": "billing_period_end"}
_PROVIDER_COLUMNS = ("providername", "serviceprovidername", "provider")
_REQUIRED = ("chargeperiodstart", "chargeperiodend", "billedcost", "billingcurrency", "chargecategory")
_CATEGORY = {c.lower(): c for c in CHARGE_CATEGORIES}
_FREQUENCY = {f.lower(): f for f in CHARGE_FREQUENCIES}
_PROVIDER_NAMES = {
    "aws": "aws",
    "amazon web services": "aws",
    "google cloud": "gcp",
    "google cloud platform": "gcp",
    "gcp": "gcp",
    "google": "gcp",
    "microsoft": "azure",
    "azure": "azure",
    "microsoft azure": "azure",
    "oracle": "oci",
    "oci": "oci",
    "oracle cloud infrastructure": "oci",
}


class FocusSourceConfig(SourceConfig):
    type: Literal["focus"] = "focus"
    path: ConfigPattern = Field(description="a FOCUS file, a folder (searched recursively) or a glob")
    provider: str | None = Field(
        default=None, description="provider to record when the files have no ProviderName column"
    )


def normalise_provider(name: str) -> str:
    """``AWS``/``Amazon Web Services`` → ``aws``, ``Google Cloud`` → ``gcp`` …; others lower-cased."""
    key = name.strip().lower()
    return _PROVIDER_NAMES.get(key, key.replace(" ", "-"))


def find_files(spec: str) -> list[Path]:
    """The export files ``spec`` names: one file, every export file under a folder, or a glob."""
    path = Path(spec).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        candidates = sorted(p for p in path.rglob("*") if p.is_file())
    else:
        # glob.glob, not Path.glob: the pattern is usually absolute (resolved against the config folder).
        matches = glob.glob(str(path), recursive=True)  # noqa: PTH207
        candidates = sorted(Path(p) for p in matches if Path(p).is_file())
    return [p for p in candidates if _is_export_file(p)]


def _is_export_file(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith((".csv", ".csv.gz", ".parquet", ".snappy.parquet", ".pq"))


def files_fingerprint(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


@SOURCES.register("focus")
class FocusSource(Source):
    config_model: ClassVar[type[SourceConfig]] = FocusSourceConfig
    config: FocusSourceConfig

    def collect(self, window: CollectWindow) -> Iterator[Batch]:
        files = find_files(self.config.path)
        if not files:
            raise InputError(f"source {self.name}: no FOCUS files (.csv, .csv.gz, .parquet) at {self.config.path}")
        fingerprint = files_fingerprint(files)
        if self.context.store.get_state(self.name, "fingerprint") == fingerprint:
            self.context.progress(f"{self.name}: {len(files)} file(s) unchanged since the last load")
            return
        reader = FocusReader(self.config.owner_tags, self.config.job_tags, self.config.provider)
        tables = []
        for number, path in enumerate(files, 1):
            self.context.progress(f"{self.name}: reading {path.name} ({number}/{len(files)})")
            tables.append(reader.read_file(path))
        lines = pa.concat_tables(tables) if tables else COST_LINE_SCHEMA.empty_table()
        yield from split_by_month(lines, label=self.name, fingerprint=fingerprint)
        self.context.store.set_state(self.name, "fingerprint", fingerprint)


def split_by_month(lines: pa.Table, *, label: str, fingerprint: str | None = None) -> Iterator[CostBatch]:
    """One batch per calendar month (UTC) of ``charge_period_start``."""
    if lines.num_rows == 0:
        return
    starts = lines.column("charge_period_start")
    months = pc.strftime(starts, format="%Y-%m", locale="C")
    # Every period is worked out before the first is yielded: a month that cannot be (year 9999) must
    # fail the run before anything was written, not after earlier months were replaced.
    periods = []
    for month in sorted(set(months.to_pylist())):
        year, mon = int(month[:4]), int(month[5:7])
        start = datetime(year, mon, 1, tzinfo=UTC)
        end = datetime(year + (mon == 12), mon % 12 + 1, 1, tzinfo=UTC)
        periods.append((month, start, end))
    for month, start, end in periods:
        part = lines.filter(pc.equal(months, month))
        yield CostBatch(start, end, part, label=f"{label} {month}", fingerprint=fingerprint)


class FocusReader:
    """Reads one FOCUS file into the store's cost-line schema, or raises ``InputError``."""

    def __init__(self, owner_tags: list[str], job_tags: list[str], provider: str | None = None) -> None:
        self.owner_tags = owner_tags
        self.job_tags = job_tags
        self.provider = provider

    def read_file(self, path: Path) -> pa.Table:
        parts = [self._convert(path, block, offset) for block, offset in _blocks(path)]
        return pa.concat_tables(parts) if parts else COST_LINE_SCHEMA.empty_table()

    def _convert(self, path: Path, raw: pa.Table, offset: int) -> pa.Table:
        columns = {_normalise(name): name for name in raw.column_names}
        missing = [name for name in _REQUIRED if name not in columns]
        provider_column = next((columns[c] for c in _PROVIDER_COLUMNS if c in columns), None)
        if provider_column is None and self.provider is None:
            missing.append("providername")
        if missing:
            names = ", ".join(_FOCUS_NAMES.get(m, m) for m in missing)
            raise InputError(f"{path}: missing required FOCUS column(s): {names}")
        cell = _Cells(path, raw, offset)
        out: dict[str, pa.Array] = {}
        out["charge_period_start"] = cell.timestamps(columns["chargeperiodstart"])
        out["charge_period_end"] = cell.timestamps(columns["chargeperiodend"])
        cell.check_order(columns["chargeperiodstart"], out["charge_period_start"], out["charge_period_end"])
        out["billed_cost"] = cell.numbers(columns["billedcost"], required=True)
        effective = columns.get("effectivecost")
        out["effective_cost"] = (
            pc.coalesce(cell.numbers(effective, required=False), out["billed_cost"])
            if effective
            else out["billed_cost"]
        )
        if "listcost" in columns:
            out["list_cost"] = cell.numbers(columns["listcost"], required=False)
        out["billing_currency"] = cell.text(columns["billingcurrency"], required=True)
        out["charge_category"] = cell.choice(columns["chargecategory"], _CATEGORY, required=True)
        if "chargefrequency" in columns:
            out["charge_frequency"] = cell.choice(columns["chargefrequency"], _FREQUENCY, required=False)
        out["provider"] = self._providers(cell, provider_column, raw.num_rows)
        for focus_name, store_name in _COLUMNS.items():
            if focus_name in columns and store_name not in out:
                out[store_name] = cell.text(columns[focus_name], required=False)
        for focus_name, store_name in (*_PRICES.items(), *_AMOUNTS.items()):
            if focus_name in columns:
                out[store_name] = cell.numbers(columns[focus_name], required=False)
        for focus_name, store_name in _QUANTITIES.items():
            if focus_name in columns:
                out[store_name] = cell.numbers(columns[focus_name], required=False, limit=None)
        for focus_name, store_name in _PERIODS.items():
            if focus_name in columns:
                out[store_name] = cell.timestamps(columns[focus_name], required=False)
        tags = cell.tags(columns["tags"]) if "tags" in columns else tags_array([None] * raw.num_rows)
        out["tags"] = tags
        out["owner"] = derive_column(tags, self.owner_tags)
        out["job_id"] = derive_column(tags, self.job_tags)
        return conform(pa.table(out), COST_LINE_SCHEMA)

    def _providers(self, cell: _Cells, column: str | None, rows: int) -> pa.Array:
        if column is None:
            assert self.provider is not None
            return pa.array([normalise_provider(self.provider)] * rows, type=pa.string())
        names = cell.text(column, required=self.provider is None).to_pylist()
        fallback = self.provider or ""
        return pa.array([normalise_provider(n or fallback) for n in names], type=pa.string())


_FOCUS_NAMES = {
    "chargeperiodstart": "ChargePeriodStart",
    "chargeperiodend": "ChargePeriodEnd",
    "billedcost": "BilledCost",
    "billingcurrency": "BillingCurrency",
    "chargecategory": "ChargeCategory",
    "providername": "ProviderName",
}


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "").replace(" ", "")


def _blocks(path: Path) -> Iterator[tuple[pa.Table, int]]:
    """The file as string-typed tables of at most ``_BLOCK_ROWS`` rows, with their row offsets."""
    offset = 0
    try:
        if not path.name.lower().endswith((".parquet", ".pq")):
            _check_text(path)
        if path.name.lower().endswith((".parquet", ".pq")):
            parquet = pq.ParquetFile(path)
            for batch in parquet.iter_batches(batch_size=_BLOCK_ROWS):
                table = pa.Table.from_batches([batch])
                yield table, offset
                offset += table.num_rows
            return
        with pa.input_stream(str(path), compression="detect") as stream:
            header = pacsv.open_csv(stream, parse_options=pacsv.ParseOptions(newlines_in_values=True))
            names = header.schema.names
        convert = pacsv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.string()),
            null_values=NULL_STRINGS,
            strings_can_be_null=True,
        )
        with pa.input_stream(str(path), compression="detect") as stream:
            reader = pacsv.open_csv(
                stream,
                parse_options=pacsv.ParseOptions(newlines_in_values=True),
                convert_options=convert,
                read_options=pacsv.ReadOptions(block_size=1 << 24),
            )
            for batch in reader:
                table = pa.Table.from_batches([batch])
                yield table, offset
                offset += table.num_rows
    except (pa.ArrowInvalid, OSError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        row = _bad_csv_row(path) if "CSV parse error" in reason else None
        if row is not None:
            number, problem = row
            raise InputError(f"{path}: row {number}: {problem}") from None
        reason = reason if len(reason) <= 160 else reason[:157] + "..."
        raise InputError(f"{path}: cannot read the file near row {offset + 1}: {reason}") from None


def _check_text(path: Path) -> None:
    """A CSV in UTF-16 (Excel's "Unicode text") or a binary file gets its own message, not a column count."""
    from spendwatch.config_types import encoding_problem

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as handle:
        head = handle.read(65536)
    problem = encoding_problem(head)
    if problem is not None:
        raise InputError(f"{path}: {problem}; FOCUS CSV files are UTF-8 (export or save the file as UTF-8)")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a character cut at the end of the sample
            line = head[: exc.start].count(b"\n") + 1
            raise InputError(
                f"{path}: line {line}: not UTF-8 text (byte 0x{head[exc.start]:02x}); FOCUS CSV files are UTF-8"
            ) from None


def _bad_csv_row(path: Path) -> tuple[int, str] | None:
    """Arrow names no row in a parse error; find the first record whose field count is wrong."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="")
            reader = csv.reader(text)
            header = next(reader, None)
            if header is None:
                return None
            for number, record in enumerate(reader, 1):
                if record and len(record) != len(header):
                    return number, f"{len(record)} fields where the header has {len(header)}"
    except (OSError, EOFError, csv.Error):
        return None
    return None


class _Cells:
    """Column conversions that name the file, row and column of the first bad value."""

    def __init__(self, path: Path, table: pa.Table, offset: int) -> None:
        self.path = path
        self.table = table
        self.offset = offset

    def _strings(self, column: str, *, typed: bool = False) -> pd.Series:
        """The column as text (nulls for NULL strings); with ``typed``, numbers and timestamps stay as they are."""
        array = self.table.column(column)
        kind = array.type
        if typed and (pa.types.is_timestamp(kind) or pa.types.is_floating(kind) or pa.types.is_integer(kind)):
            values: pd.Series = array.to_pandas()
            return values
        if not pa.types.is_string(kind) and not pa.types.is_large_string(kind):
            array = self._as_text(column, array)
        series: pd.Series = array.to_pandas()
        return series.where(~series.isin(NULL_STRINGS))

    def _as_text(self, column: str, array: pa.ChunkedArray) -> pa.ChunkedArray:
        try:
            return array.cast(pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise InputError(
                f"{self.path}: column {column}: holds {array.type} values, which cannot be read as text"
            ) from None

    def _fail(self, column: str, index: int, problem: str) -> InputError:
        return InputError(f"{self.path}: row {self.offset + index + 1}, column {column}: {problem}")

    def _first(self, mask: pd.Series) -> int:
        return int(mask.to_numpy().nonzero()[0][0])

    def _check_required(self, column: str, raw: pd.Series) -> None:
        empty = raw.isna()
        if empty.any():
            raise self._fail(column, self._first(empty), "empty value in a required column")

    def timestamps(self, column: str, *, required: bool = True) -> pa.Array:
        kind = self.table.column(column).type
        if pa.types.is_integer(kind) or pa.types.is_floating(kind):
            # An epoch number is ambiguous (seconds? milliseconds?); FOCUS dates are timestamps or ISO 8601.
            raise InputError(
                f"{self.path}: column {column}: holds {kind} numbers, not timestamps "
                "(FOCUS dates are timestamps or ISO 8601 text)"
            )
        raw = self._strings(column, typed=True)
        if required:
            self._check_required(column, raw)
        if pd.api.types.is_datetime64_any_dtype(raw):
            parsed = pd.to_datetime(raw, utc=True)
        else:
            parsed = pd.to_datetime(raw.str.strip(), utc=True, format="ISO8601", errors="coerce")
        bad = parsed.isna() & raw.notna()
        if bad.any():
            index = self._first(bad)
            raise self._fail(column, index, f"{raw.iloc[index]!r} is not a timestamp")
        outside = ((parsed < _EARLIEST) | (parsed >= _LATEST)).fillna(False)
        if outside.any():
            index = self._first(outside)
            raise self._fail(
                column, index, f"{raw.iloc[index]!s} is outside the years {FIRST_YEAR}-{END_YEAR - 1} a bill can cover"
            )
        return pa.array(parsed, type=TIMESTAMP)

    def check_order(self, column: str, starts: pa.Array, ends: pa.Array) -> None:
        backwards = pc.less(ends, starts).to_numpy(zero_copy_only=False)
        if backwards.any():
            index = int(backwards.nonzero()[0][0])
            raise self._fail(column, index, "charge period ends before it starts")

    def numbers(self, column: str, *, required: bool, limit: float | None = MAX_AMOUNT) -> pa.Array:
        raw = self._strings(column, typed=True)
        if required:
            self._check_required(column, raw)
        parsed = pd.to_numeric(raw, errors="coerce")
        bad = parsed.isna() & raw.notna()
        if bad.any():
            index = self._first(bad)
            raise self._fail(column, index, f"{raw.iloc[index]!r} is not a number")
        values = parsed.astype("float64")
        magnitude = np.abs(values.to_numpy())
        infinite = np.isinf(magnitude)
        if infinite.any():  # "Infinity", "1e400": stored, they would make every total infinite
            index = int(infinite.nonzero()[0][0])
            raise self._fail(column, index, f"{raw.iloc[index]!r} is not a finite number")
        absurd = magnitude >= (limit if limit is not None else np.inf)
        if absurd.any():  # 1e300 is finite, but two of them add up to infinity
            index = int(absurd.nonzero()[0][0])
            raise self._fail(column, index, f"{raw.iloc[index]!r} is not a plausible amount (at most 1e15)")
        return pa.array(values, type=pa.float64(), from_pandas=True)

    def text(self, column: str, *, required: bool) -> pa.Array:
        raw = self._strings(column)
        if required:
            self._check_required(column, raw)
        return pa.array(raw.astype("object").where(raw.notna(), None), type=pa.string())

    def choice(self, column: str, allowed: dict[str, str], *, required: bool) -> pa.Array:
        raw = self._strings(column)
        if required:
            self._check_required(column, raw)
        keys = raw.str.strip().str.lower()
        mapped = keys.map(allowed)
        bad = mapped.isna() & raw.notna()
        if bad.any():
            index = self._first(bad)
            choices = ", ".join(sorted(allowed.values()))
            raise self._fail(column, index, f"{raw.iloc[index]!r} is not one of {choices}")
        return pa.array(mapped.astype("object").where(mapped.notna(), None), type=pa.string())

    def tags(self, column: str) -> pa.Array:
        array = self.table.column(column)
        if pa.types.is_map(array.type):
            try:
                return array.combine_chunks().cast(COST_LINE_SCHEMA.field("tags").type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise InputError(
                    f"{self.path}: column {column}: a {array.type} cannot be read as tags (a map of text to text)"
                ) from None
        if pa.types.is_nested(array.type):  # a list or struct: text of it would not be a JSON object
            raise InputError(
                f"{self.path}: column {column}: holds {array.type} values; FOCUS tags are a map or a JSON object"
            )
        parsed = []
        for index, text in enumerate(self._strings(column).tolist()):
            try:
                parsed.append(parse_tags_json(None if pd.isna(text) else str(text)))
            except ValueError as exc:
                raise self._fail(column, index, f"tags are not a JSON object ({exc})") from None
        return tags_array(parsed)
