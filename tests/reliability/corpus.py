"""The bad-input corpus: what a case is, the folder it runs in, and what every case must show.

A ``Case`` writes its bad input into a ``Workspace`` (a folder holding a copy of a small, already
filled store and a good config) and returns the ``spendwatch`` arguments that feed it in. The runner
(``test_corpus.py``) invokes the CLI in-process and asserts, for every case alike:

* the exit code (2: the user's to fix; 1 only for a cloud that kept failing);
* exactly one ``spendwatch: error:`` / ``spendwatch: problem:`` line, holding every ``expect`` string
  (the file and the key / row / column, or the argument); any other stderr line is progress;
* no traceback anywhere;
* the store unchanged: byte for byte when nothing may write to it, else by its totals, batch ids,
  jobs, incidents, actions and digests (a failed collection may record its run, nothing else).
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

BASE_CONFIG = """store:
  path: store.duckdb
sources:
  - name: base
    type: focus
    path: base
"""

PROGRESS_PREFIXES = ("collecting ", "  ")


@dataclass
class Workspace:
    """One case's folder: ``store.duckdb`` (filled), ``base/`` (its FOCUS files), ``spendwatch.yaml``."""

    root: Path
    services: dict[str, Any] = field(default_factory=dict)  # "moto", "google": started on demand
    cleanups: list[Callable[[], None]] = field(default_factory=list)  # run after the command

    @property
    def store(self) -> Path:
        return self.root / "store.duckdb"

    @property
    def config(self) -> Path:
        return self.root / "spendwatch.yaml"

    def write(self, name: str, data: str | bytes) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data)
        return path

    def with_sources(self, yaml_items: str) -> Path:
        """The good config plus more sources (YAML list items, indented two spaces)."""
        return self.write("spendwatch.yaml", BASE_CONFIG + yaml_items)

    def service(self, name: str) -> Any:
        return self.services[name]()


Build = Callable[[Workspace], list[str]]


@dataclass(frozen=True)
class Case:
    id: str
    surface: str
    build: Build
    expect: tuple[str, ...]
    exit_code: int = 2
    # "bytes": nothing may write to the store file; "totals": a run record may be added; "absent": no
    # store is ever created (config errors before anything opens it).
    store: str = "totals"
    needs: tuple[str, ...] = ()


def case(
    surface: str,
    id: str,
    build: Build,
    *expect: str,
    exit_code: int = 2,
    store: str = "totals",
    needs: tuple[str, ...] = (),
) -> Case:
    return Case(id, surface, build, tuple(expect), exit_code, store, needs)


# -- what is compared ------------------------------------------------------------------------------


def file_digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def store_state(path: Path) -> dict[str, Any] | None:
    """Totals and ids of everything a failed command must not touch (read without migrating)."""
    if not path.exists():
        return None
    con = duckdb.connect(str(path), read_only=True)
    try:
        queries = {
            "cost": "SELECT source, count(*), round(sum(billed_cost), 6), round(sum(effective_cost), 6) "
            "FROM cost_lines GROUP BY ALL ORDER BY ALL",
            "loads": "SELECT source, period_start, batch_id, row_count FROM loads ORDER BY ALL",
            # A failed run may count the API requests it made (a budget) and move its cursor back; it
            # must never record a file fingerprint or a manifest as loaded.
            "state": "SELECT source, key, value FROM source_state WHERE key NOT LIKE 'requests:%' "
            "AND key <> 'loaded_until' ORDER BY ALL",
            "jobs": "SELECT count(*), round(coalesce(sum(estimated_cost), 0), 6) FROM jobs",
            "anomalies": "SELECT id, status FROM anomalies ORDER BY id",
            "actions": "SELECT id, state FROM actions ORDER BY id",
            "digests": "SELECT day, status FROM digests ORDER BY day",
            "settings": "SELECT key, value FROM settings ORDER BY key",
        }
        return {name: con.execute(sql).fetchall() for name, sql in queries.items()}
    finally:
        con.close()


def snapshot_store(workspace: Workspace, mode: str) -> Any:
    if mode == "bytes":  # the database and its write-ahead log (lock files may come and go)
        return {name: file_digest(workspace.root / name) for name in ("store.duckdb", "store.duckdb.wal")}
    if mode == "absent":
        return workspace.store.exists()
    return store_state(workspace.store)


def error_lines(stderr: str) -> tuple[list[str], list[str]]:
    """(the error/problem lines, any other line that is not progress)."""
    errors, stray = [], []
    for line in stderr.splitlines():
        if line.startswith(("spendwatch: error:", "spendwatch: problem:")):
            errors.append(line)
        elif line.strip() and not line.startswith(PROGRESS_PREFIXES):
            stray.append(line)
    return errors, stray


def copy_template(template: Path, root: Path) -> None:
    for entry in template.iterdir():
        target = root / entry.name
        if entry.is_dir():
            shutil.copytree(entry, target)
        else:
            shutil.copy2(entry, target)
