"""Causal walk-forward backtest over a long-format cost CSV (``series_id,timestamp,cost``).

The backtest decides every column of the panel with one :meth:`Detector.fit` call; since
each decision depends only on columns up to itself (see :mod:`spendwatch.detect.model`),
that is exactly what a daemon deciding once per day/hour would have flagged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from spendwatch.detect.kinds import Kind
from spendwatch.detect.model import Detector, Granularity, ModelParams
from spendwatch.errors import InputError

REQUIRED_COLUMNS = ("series_id", "timestamp", "cost")
TIMESTAMP_FORMATS = {"daily": "%Y-%m-%d", "hourly": "%Y-%m-%dT%H:00:00Z"}
_PATTERNS = {
    "daily": re.compile(r"^\d{4}-\d{2}-\d{2}$"),
    "hourly": re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:00:00Z$"),
}
_STEP = {"daily": np.timedelta64(1, "D"), "hourly": np.timedelta64(1, "h")}
_FIRST_DATA_ROW = 2  # row 1 is the header
# The panel is dense (series × steps): a mistyped year would allocate millions of empty steps.
MAX_STEPS = 100_000  # 11 years hourly, 273 years daily
MAX_CELLS = 50_000_000  # 400 MB per float array; the detector keeps several
_HEADER = ",".join(REQUIRED_COLUMNS)


@dataclass(frozen=True)
class Panel:
    """A regular (n_series, n_steps) grid of costs; NaN where a row was missing."""

    series_ids: list[str]
    timestamps: np.ndarray  # datetime64[s], UTC column starts, one step apart
    values: np.ndarray  # float64 (n_series, n_steps)
    granularity: str


def read_long_csv(path: Path, granularity: str | None = None) -> Panel:
    """Read ``series_id,timestamp,cost`` rows and pivot them onto a regular grid.

    The granularity is detected from the timestamp format unless given. Every user mistake
    raises :class:`InputError` naming the file, the row and the column.
    """
    path = Path(path)
    rows = _read_rows(path)
    detected = _granularity_of(rows, path)
    if granularity is not None and granularity != detected:
        raise InputError(
            f"{path}: row {_FIRST_DATA_ROW}, column 'timestamp': timestamps are {detected} "
            f"but --granularity {granularity} was given"
        )
    stamps = _parse_timestamps(rows, path, detected)
    costs = _parse_costs(rows, path)
    _reject_duplicates(rows, stamps, path)
    _check_size(rows, stamps, path, detected)
    return _pivot(rows["series_id"], stamps, costs, detected)


def _read_rows(path: Path) -> pd.DataFrame:
    _check_text(path)
    try:
        rows = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True).fillna("")
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except pd.errors.EmptyDataError:
        raise InputError(
            f"{path}: row 1, column 'series_id': the file is empty (expected a header {_HEADER})"
        ) from None
    except pd.errors.ParserError as error:
        line = re.search(r"line (\d+)", str(error))
        where = f"row {line.group(1)}" if line else "row ?"
        raise InputError(f"{path}: {where}, column 'cost': wrong number of fields (expected {_HEADER})") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: row 1, column 'series_id': not a UTF-8 text file") from None
    for column in REQUIRED_COLUMNS:
        if column not in rows.columns:
            raise InputError(f"{path}: row 1, column '{column}': missing column (expected a header {_HEADER})")
    if rows.empty:
        raise InputError(f"{path}: row {_FIRST_DATA_ROW}, column 'series_id': no data rows after the header")
    empty_ids = (rows["series_id"].str.strip() == "").to_numpy()
    if empty_ids.any():
        _raise_at(path, empty_ids, "series_id", "empty series id")
    return rows


def _check_text(path: Path) -> None:
    """UTF-16 (Excel's "Unicode text") or a binary file: say so, instead of a confusing column error."""
    from spendwatch.config_types import encoding_problem

    try:
        with path.open("rb") as handle:
            head = handle.read(65536)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    problem = encoding_problem(head)
    if problem is not None:
        raise InputError(f"{path}: row 1, column 'series_id': the file {problem}; save it as UTF-8 CSV")


def _granularity_of(rows: pd.DataFrame, path: Path) -> str:
    text = rows["timestamp"].str.strip()
    daily = text.str.match(_PATTERNS["daily"].pattern).to_numpy()
    hourly = text.str.match(_PATTERNS["hourly"].pattern).to_numpy()
    known = daily | hourly
    if not known.all():
        bad = int(np.argmin(known))
        raise InputError(
            f"{path}: row {bad + _FIRST_DATA_ROW}, column 'timestamp': cannot parse {text.iloc[bad]!r} "
            "(expected YYYY-MM-DD or YYYY-MM-DDTHH:00:00Z)"
        )
    first = "daily" if daily[0] else "hourly"
    same = daily if first == "daily" else hourly
    if not same.all():
        bad = int(np.argmin(same))
        raise InputError(
            f"{path}: row {bad + _FIRST_DATA_ROW}, column 'timestamp': {text.iloc[bad]!r} mixes "
            f"granularities (row {_FIRST_DATA_ROW} is {first})"
        )
    return first


def _parse_timestamps(rows: pd.DataFrame, path: Path, granularity: str) -> np.ndarray:
    text = rows["timestamp"].str.strip()
    parsed = pd.to_datetime(text, format=TIMESTAMP_FORMATS[granularity], errors="coerce", utc=True)
    invalid = parsed.isna().to_numpy()
    if invalid.any():
        _raise_at(path, invalid, "timestamp", f"not a valid date: {text[invalid].iloc[0]!r}")
    return parsed.dt.tz_localize(None).to_numpy().astype("datetime64[s]")


def _parse_costs(rows: pd.DataFrame, path: Path) -> np.ndarray:
    text = rows["cost"].str.strip()
    costs = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
    invalid = ~np.isfinite(costs)
    if invalid.any():
        value = text[invalid].iloc[0]
        _raise_at(path, invalid, "cost", f"not a number: {value!r}" if value else "missing cost")
    return costs


def _reject_duplicates(rows: pd.DataFrame, stamps: np.ndarray, path: Path) -> None:
    keys = pd.DataFrame({"series_id": rows["series_id"].to_numpy(), "timestamp": stamps})
    duplicated = keys.duplicated().to_numpy()
    if duplicated.any():
        row = int(np.argmax(duplicated))
        _raise_at(
            path, duplicated, "timestamp", f"duplicate row for series {keys['series_id'].iloc[row]!r} at this time"
        )


def _check_size(rows: pd.DataFrame, stamps: np.ndarray, path: Path, granularity: str) -> None:
    steps = int((stamps.max() - stamps.min()) // _STEP[granularity]) + 1
    n_series = int(rows["series_id"].nunique())
    if steps <= MAX_STEPS and steps * n_series <= MAX_CELLS:
        return
    # Point at the timestamp farthest from the middle: usually the one with the mistyped year.
    middle = np.median(stamps.astype(np.int64))
    far = int(np.argmax(np.abs(stamps.astype(np.int64) - middle)))
    text = rows["timestamp"].iloc[far].strip()
    limit = f"at most {MAX_STEPS:,} steps" if steps > MAX_STEPS else f"at most {MAX_CELLS:,} series × steps"
    raise InputError(
        f"{path}: row {far + _FIRST_DATA_ROW}, column 'timestamp': {text!r} stretches the data to {steps:,} "
        f"{granularity} steps × {n_series:,} series ({limit}); is a year mistyped?"
    )


def _raise_at(path: Path, mask: np.ndarray, column: str, problem: str) -> None:
    row = int(np.argmax(mask)) + _FIRST_DATA_ROW
    raise InputError(f"{path}: row {row}, column '{column}': {problem}")


def _pivot(series: pd.Series, stamps: np.ndarray, costs: np.ndarray, granularity: str) -> Panel:
    ids, series_index = np.unique(series.to_numpy(dtype=str), return_inverse=True)
    step = _STEP[granularity]
    first = stamps.min()
    n_steps = int((stamps.max() - first) // step) + 1
    columns = ((stamps - first) // step).astype(np.int64)
    values = np.full((len(ids), n_steps), np.nan)
    values[series_index, columns] = costs
    timestamps = first + np.arange(n_steps) * step
    return Panel([str(i) for i in ids], timestamps.astype("datetime64[s]"), values, granularity)


def run_backtest(panel: Panel, params: ModelParams | None = None) -> pd.DataFrame:
    """Walk forward over every column; one output row per observed (non-missing) input row.

    Columns: series_id, timestamp (datetime64), score, is_anomaly, kind (name), expected.
    """
    if params is None:
        params = ModelParams.for_granularity(_as_granularity(panel.granularity))
    if params.granularity != panel.granularity:
        raise ValueError(f"params are for {params.granularity} data but the panel is {panel.granularity}")
    result = Detector(params).fit(panel.values, panel.timestamps)
    observed_series, observed_steps = np.nonzero(~np.isnan(panel.values))
    kind_names = np.array([k.name.lower() for k in sorted(Kind)])
    return pd.DataFrame(
        {
            "series_id": np.asarray(panel.series_ids, dtype=object)[observed_series],
            "timestamp": panel.timestamps[observed_steps],
            "score": result.score[observed_series, observed_steps],
            "is_anomaly": result.is_anomaly[observed_series, observed_steps],
            "kind": kind_names[result.kind[observed_series, observed_steps]],
            "expected": result.expected[observed_series, observed_steps],
        }
    )


def _as_granularity(name: str) -> Granularity:
    if name == "daily":
        return "daily"
    if name == "hourly":
        return "hourly"
    raise ValueError(f"granularity must be 'daily' or 'hourly', not {name!r}")


def write_flags(frame: pd.DataFrame, path: Path, granularity: str) -> None:
    """Write series_id,timestamp,score,is_anomaly with timestamps formatted as in the input."""
    if granularity not in TIMESTAMP_FORMATS:
        raise ValueError(f"granularity must be 'daily' or 'hourly', not {granularity!r}")
    stamps = pd.to_datetime(frame["timestamp"]).dt.strftime(TIMESTAMP_FORMATS[granularity])
    out = pd.DataFrame(
        {
            "series_id": frame["series_id"],
            "timestamp": stamps,
            "score": frame["score"].round(4),
            "is_anomaly": np.where(frame["is_anomaly"].to_numpy(dtype=bool), "true", "false"),
        }
    )
    out.to_csv(Path(path), index=False, na_rep="")
