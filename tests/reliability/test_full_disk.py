"""A full disk during a collection, and a store folder spendwatch may not write: one line, nothing lost.

The full disk is a file-size limit (``RLIMIT_FSIZE``, set in the child before it runs: no root, no
loop device). Python ignores ``SIGXFSZ``, so a write past the limit fails with ``EFBIG`` exactly as a
write to a full disk fails with ``ENOSPC``; DuckDB reports both as an I/O error, and spendwatch as one
line saying the disk is full and the previous data is intact.
"""

from __future__ import annotations

import hashlib
import os
import resource
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from spendwatch.collect import collect_source
from spendwatch.config import load_config
from spendwatch.store import Store
from spendwatch.store.snapshots import check_file
from tests.doubles.clock import FixedClock
from tests.doubles.focus_files import COLUMNS, month_rows, write_csv

REPO = Path(__file__).resolve().parents[2]
SPENDWATCH = [sys.executable, "-m", "spendwatch"]
MONTHS = ("2026-07", "2026-08", "2026-09")
ROWS_PER_MONTH = 28 * 40


def _workspace(root: Path) -> Path:
    write_csv(root / "base" / "2026-10.csv", month_rows("2026-10", 31, 2.0))
    for month in MONTHS:  # three months big enough that their write-ahead log passes the limits below
        rows = [r for d in range(40) for r in month_rows(month, 28, 1.0 + d)]
        for i, row in enumerate(rows):  # each line its own text: the store keeps the shared columns once
            row["ResourceId"] = hashlib.sha256(f"{month}/{i}".encode()).hexdigest()
            row["ChargeDescription"] = row["ResourceId"] * 16
        write_csv(root / "big" / f"{month}.csv", rows, [*COLUMNS, "ChargeDescription"])
    config = root / "spendwatch.yaml"
    config.write_text(
        "store: {path: store.duckdb}\nsources:\n"
        "  - {name: base, type: focus, path: base}\n  - {name: big, type: focus, path: big}\n"
    )
    return config


def _collect(config: Path, source: str) -> None:
    loaded = load_config(config)
    clock = FixedClock(datetime(2026, 11, 20, tzinfo=UTC))
    run = collect_source(loaded.source(source), Store(loaded.store.path, clock=clock), clock)
    assert run.error is None, run.error


def _months(store_path: Path) -> dict[tuple[str, str], tuple[int, float]]:
    rows = Store(store_path).query(
        "SELECT source, strftime(charge_period_start, '%Y-%m'), count(*), round(sum(billed_cost), 6) "
        "FROM cost_lines GROUP BY ALL"
    )
    return {(source, month): (count, total) for source, month, count, total in rows}


def _limited(limit: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], tuple[int, float]]:
    """What base + big look like after a collection with all the space in the world."""
    root = tmp_path_factory.mktemp("full-disk-clean")
    config = _workspace(root)
    _collect(config, "base")
    _collect(config, "big")
    return _months(root / "store.duckdb")


@pytest.mark.parametrize("limit", [64 * 1024, 1024 * 1024], ids=["64KiB", "1MiB"])
def test_a_full_disk_during_a_collection_is_one_line_and_loses_nothing(
    tmp_path: Path, limit: int, clean: dict[tuple[str, str], tuple[int, float]]
) -> None:
    config = _workspace(tmp_path)
    _collect(config, "base")
    before = _months(tmp_path / "store.duckdb")

    result = subprocess.run(
        [*SPENDWATCH, "-c", str(config), "collect", "--source", "big"],
        preexec_fn=_limited(limit),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        check=False,
    )

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("spendwatch: error:")]
    assert len(errors) == 1, result.stderr
    assert "store.duckdb: no space left (a full disk or a file-size limit)" in errors[0]
    assert "previous data is intact" in errors[0]
    # The store reads end to end; what was there is untouched; every month is whole or absent.
    assert check_file(tmp_path / "store.duckdb").ok
    after = _months(tmp_path / "store.duckdb")
    assert {k: v for k, v in after.items() if k[0] == "base"} == before
    for key, figures in after.items():
        assert figures == clean[key], f"{key} was stored partly: {figures} instead of {clean[key]}"
    # With the space back, the next run loads everything exactly once.
    _collect(config, "big")
    assert _months(tmp_path / "store.duckdb") == clean


# -- a folder spendwatch may not write ------------------------------------------------------------------

# Capabilities that let root ignore file modes (capabilities(7)); dropped from the bounding set, execve
# cannot give them back, so a root child then meets the folder's mode like anyone else.
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH, _CAP_FOWNER, _PR_CAPBSET_DROP = 1, 2, 3, 24


def _bound_by_file_modes() -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH, _CAP_FOWNER):
        if libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@pytest.fixture
def as_an_ordinary_user() -> Callable[[], None] | None:
    """How to start a child that file modes bind: nothing as a user; as root, without the override caps."""
    if os.geteuid() != 0:
        return None
    probe = subprocess.run(["true"], preexec_fn=_bound_by_file_modes, check=False, capture_output=True)
    if probe.returncode != 0:
        pytest.skip("running as root without CAP_SETPCAP: cannot make file modes bind a child")
    return _bound_by_file_modes


def test_an_unwritable_store_folder_is_one_line(tmp_path: Path, as_an_ordinary_user: Any) -> None:
    write_csv(tmp_path / "base" / "2026-10.csv", month_rows("2026-10", 3, 2.0))
    config = tmp_path / "spendwatch.yaml"
    config.write_text("store: {path: data/store.duckdb}\nsources:\n  - {name: base, type: focus, path: base}\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data").chmod(0o555)
    try:
        result = subprocess.run(
            [*SPENDWATCH, "-c", str(config), "collect"],
            preexec_fn=as_an_ordinary_user,
            capture_output=True,
            text=True,
            timeout=300,
            cwd=REPO,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
            check=False,
        )
    finally:
        (tmp_path / "data").chmod(0o755)

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("spendwatch: error:")]
    assert "data/store.duckdb" in line and "permission denied" in line, line
    assert not (tmp_path / "data" / "store.duckdb").exists()
