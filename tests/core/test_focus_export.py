"""A complete FOCUS 1.0 export: every column of the version it states, and the FinOps sample round-trips.

The FinOps Foundation's FOCUS 1.0 sample (1,000 AWS, Microsoft and Oracle rows in ../shared/real-data)
is loaded with the ``focus`` source, exported as Parquet and as CSV, and each export is compared with
the sample row by row over every FOCUS column, then loaded again: totals and rows are the same.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

from spendwatch.collect import collect_source
from spendwatch.collectors.focus import FocusSourceConfig
from spendwatch.collectors.simulated import SimulatedSourceConfig
from spendwatch.export import CUSTOM_COLUMNS, FOCUS_COLUMNS, export_focus
from spendwatch.store import Store
from tests.doubles.clock import FixedClock

# FOCUS 1.0's columns and feature levels, as the specification (v1.0, specification/columns) lists them.
MANDATORY = {
    "BilledCost", "BillingAccountId", "BillingAccountName", "BillingCurrency", "BillingPeriodEnd",
    "BillingPeriodStart", "ChargeCategory", "ChargeClass", "ChargeDescription", "ChargePeriodEnd",
    "ChargePeriodStart", "ContractedCost", "EffectiveCost", "InvoiceIssuerName", "ListCost", "PricingQuantity",
    "PricingUnit", "ProviderName", "PublisherName", "ServiceCategory", "ServiceName",
}  # fmt: skip
OTHERS = {
    "AvailabilityZone", "ChargeFrequency", "CommitmentDiscountCategory", "CommitmentDiscountId",
    "CommitmentDiscountName", "CommitmentDiscountStatus", "CommitmentDiscountType", "ConsumedQuantity",
    "ConsumedUnit", "ContractedUnitPrice", "ListUnitPrice", "PricingCategory", "RegionId", "RegionName",
    "ResourceId", "ResourceName", "ResourceType", "SkuId", "SkuPriceId", "SubAccountId", "SubAccountName", "Tags",
}  # fmt: skip
NUMBERS = {"BilledCost", "ConsumedQuantity", "ContractedCost", "ContractedUnitPrice", "EffectiveCost", "ListCost",
           "ListUnitPrice", "PricingQuantity"}  # fmt: skip
TIMES = {"BillingPeriodEnd", "BillingPeriodStart", "ChargePeriodEnd", "ChargePeriodStart"}
MONEY = ["BilledCost", "EffectiveCost", "ListCost", "ContractedCost"]


@pytest.fixture
def sample(shared_dir: Path) -> Path:
    path = shared_dir / "real-data" / "focus-sample-1.0" / "focus_sample.csv"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


def load(path: Path, store: Store, clock: FixedClock) -> None:
    run = collect_source(FocusSourceConfig(name="focus", path=str(path)), store, clock)
    assert run.error is None and not run.problems, run.error or run.problems


def read(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pandas()
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def value(column: str, raw: Any) -> Any:
    """One cell, normalised the way FOCUS defines it (NULL, numbers, UTC instants, JSON objects)."""
    if raw is None or (isinstance(raw, float) and math.isnan(raw)) or raw is pd.NaT or raw in ("", "NULL"):
        return None
    if column in NUMBERS:
        return round(float(raw), 9)
    if column in TIMES:
        stamp = pd.Timestamp(raw)
        return (stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")).isoformat()
    if column == "Tags":
        return tuple(sorted(json.loads(raw).items()))
    if column == "ChargeFrequency":  # the sample writes "Usage-based" 7 times; FOCUS says "Usage-Based"
        return str(raw).lower()
    return str(raw)


def rows(frame: pd.DataFrame, columns: list[str]) -> list[tuple[Any, ...]]:
    found = [tuple(value(c, v) for c, v in zip(columns, record, strict=True)) for record in frame[columns].itertuples(
        index=False, name=None)]  # fmt: skip
    return sorted(found, key=repr)


def test_the_export_declares_focus_1_0_with_all_its_columns(tmp_path: Path, clock: FixedClock) -> None:
    assert {c.name for c in FOCUS_COLUMNS} == MANDATORY | OTHERS and len(FOCUS_COLUMNS) == 43
    assert {c.name for c in FOCUS_COLUMNS if c.level == "Mandatory"} == MANDATORY
    store = Store(tmp_path / "s.duckdb", clock=clock)
    sim = SimulatedSourceConfig(name="sim", days=14, end=datetime(2026, 11, 10, tzinfo=UTC))
    assert collect_source(sim, store, clock).error is None
    for name in ("out.parquet", "out.csv"):
        result = export_focus(store, tmp_path / name)
        header = list(read(tmp_path / name).columns)
        assert header == [c.name for c in FOCUS_COLUMNS] + [c.name for c in CUSTOM_COLUMNS]
        assert header[:43] == sorted(header[:43])  # FOCUS columns first, in the specification's order
        metadata = json.loads(result.metadata_path.read_text())
        assert metadata["Schema"]["FocusVersion"] == "1.0" and metadata["DataGenerator"].startswith("spendwatch ")
        assert metadata["Schema"]["CreationDate"] == "2026-11-20T09:30:00Z"
        assert [d["ColumnName"] for d in metadata["Schema"]["ColumnDefinition"]] == header
        tags = next(d for d in metadata["Schema"]["ColumnDefinition"] if d["ColumnName"] == "Tags")
        assert tags["DataType"] == "JSON" and tags["ProviderTagPrefixes"]
        # The simulated estate has no PricingQuantity for its non-usage lines: said, not hidden.
        assert result.missing_mandatory == metadata["x_MandatoryColumnsWithNulls"]
        assert set(result.missing_mandatory) <= {"PricingQuantity", "PricingUnit"}
    parquet = pq.read_metadata(tmp_path / "out.parquet").metadata
    assert parquet[b"FocusVersion"] == b"1.0"
    assert json.loads(parquet[b"focus.metadata"])["Schema"]["SchemaId"] == metadata["Schema"]["SchemaId"]


@pytest.mark.parametrize("name", ["sample.parquet", "sample.csv"])
def test_the_focus_sample_round_trips(sample: Path, tmp_path: Path, clock: FixedClock, name: str) -> None:
    original = pd.read_csv(sample, dtype=str, keep_default_na=False)
    first = Store(tmp_path / "first.duckdb", clock=clock)
    load(sample, first, clock)
    exported = tmp_path / name

    result = export_focus(first, exported)

    assert result.rows == len(original) == 1000
    frame = read(exported)
    focus = [c for c in original.columns if c != "Id"]  # "Id" is the sandbox's row number, not a FOCUS column
    assert set(focus) == MANDATORY | OTHERS
    assert rows(frame, focus) == rows(original, focus)  # every row, every FOCUS column
    empty = {c: int(original[c].isin(["", "NULL"]).sum()) for c in MANDATORY - {"ChargeClass"}}
    assert result.missing_mandatory == {c: n for c, n in empty.items() if n}  # NULL where the sample has NULL
    for column in MONEY:
        assert pd.to_numeric(frame[column]).sum() == pytest.approx(
            pd.to_numeric(original[column].replace("NULL", None)).sum(), rel=1e-12
        )

    again = Store(tmp_path / "again.duckdb", clock=clock)
    load(exported, again, clock)
    columns = "* EXCLUDE (source, batch_id)"
    order = "ORDER BY ALL"
    assert again.query(f"SELECT {columns} FROM cost_lines {order}") == first.query(
        f"SELECT {columns} FROM cost_lines {order}"
    )
