"""Fixtures of the reliability tests: a small filled store to copy per case, and shared fake clouds."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from spendwatch.cli import main
from tests.doubles.focus_files import month_rows, write_csv
from tests.reliability.corpus import BASE_CONFIG


@pytest.fixture(scope="session")
def corpus_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with ``spendwatch.yaml``, ``base/`` (two months of FOCUS) and the store they load into."""
    root = tmp_path_factory.mktemp("corpus-template")
    write_csv(root / "base" / "2026-10.csv", month_rows("2026-10", 31, 2.0))
    write_csv(root / "base" / "2026-11.csv", month_rows("2026-11", 19, 3.0))
    (root / "spendwatch.yaml").write_text(BASE_CONFIG)
    result = CliRunner().invoke(main, ["-c", str(root / "spendwatch.yaml"), "collect"])
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture(autouse=True)
def _quiet_fake_servers() -> Iterator[None]:
    """The in-process fakes log every request; a real CLI has no such servers in its process."""
    logger = logging.getLogger("werkzeug")
    level = logger.level
    logger.setLevel(logging.WARNING)
    yield
    logger.setLevel(level)


@pytest.fixture(scope="session")
def google_server() -> Iterator[Any]:
    from tests.doubles.google import GoogleApiServer

    server = GoogleApiServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def forks() -> Any:
    """A forkserver with spendwatch (the crash passes and what they import lazily) imported: each child starts in milliseconds."""
    import multiprocessing

    context = multiprocessing.get_context("forkserver")
    from tests.reliability.crash_ops import LAZY_IMPORTS

    context.set_forkserver_preload(["tests.reliability.crash_ops", *LAZY_IMPORTS])
    return context


@pytest.fixture(scope="session")
def estate(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Starting states of the crash tests, each built on first use: ``estate("empty")`` (collect, kill
    switch), ``estate("collected")`` (detect), ``estate("detected")`` (the digest)."""
    import shutil

    from tests.reliability import crash_ops as ops

    root = tmp_path_factory.mktemp("crash-estate")
    built: dict[str, Path] = {}

    def state(name: str) -> Path:
        if name not in built:
            folder = root / name
            if name == "empty":
                ops.write_workspace(folder)
            elif name == "collected":
                shutil.copytree(state("empty"), folder)
                ops.collect(folder, ("exports", "estate"))
            elif name == "detected":
                shutil.copytree(state("collected"), folder)
                ops.detect(folder)
            built[name] = folder
        return built[name]

    return state
