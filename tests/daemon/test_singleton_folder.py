"""The daemon starts on a store whose folder does not exist yet (a fresh config)."""

from __future__ import annotations

from pathlib import Path

import pytest

from spendwatch.daemon import AlreadyRunning, acquire_singleton


def test_the_singleton_lock_creates_the_store_folder_and_refuses_a_second_holder(tmp_path: Path) -> None:
    store = tmp_path / "new" / "nested" / "store.duckdb"
    lock = acquire_singleton(store)
    try:
        assert store.parent.is_dir()
        with pytest.raises(AlreadyRunning, match="one daemon per store"):
            acquire_singleton(store)
    finally:
        lock.release()
    acquire_singleton(store).release()
