"""Every bad input in the corpus: one line naming where, the documented exit code, no traceback, store unchanged.

The cases live in ``cases_*.py`` by surface; ``corpus.py`` says what each must show. They run in-process
(Click's ``CliRunner``), so the whole corpus takes seconds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from spendwatch.cli import main
from tests.reliability import cases_cli, cases_cloud, cases_config, cases_files
from tests.reliability.corpus import Case, Workspace, copy_template, error_lines, snapshot_store

CASES: list[Case] = [*cases_config.CASES, *cases_files.CASES, *cases_cli.CASES, *cases_cloud.CASES]
SURFACES = {"config", "focus-csv", "focus-parquet", "cur", "backtest", "cli", "store", "api"}


def test_the_corpus_has_at_least_150_cases_on_every_surface() -> None:
    ids = [f"{c.surface}:{c.id}" for c in CASES]
    assert len(ids) == len(set(ids)), [i for i, n in Counter(ids).items() if n > 1]
    per_surface = Counter(c.surface for c in CASES)
    print(f"corpus: {len(CASES)} cases: {dict(sorted(per_surface.items()))}")
    assert len(CASES) >= 150
    assert set(per_surface) == SURFACES


@pytest.fixture
def services(request: pytest.FixtureRequest) -> dict[str, Callable[[], Any]]:
    """Fake clouds, started only for the cases that need them (session-wide, reset by each case)."""
    return {
        "moto": lambda: request.getfixturevalue("moto_server"),
        "google": lambda: request.getfixturevalue("google_server"),
    }


@pytest.mark.parametrize("bad", CASES, ids=[f"{c.surface}:{c.id}" for c in CASES])
def test_a_bad_input_gets_one_line_and_changes_nothing(
    bad: Case, tmp_path: Path, corpus_template: Path, services: dict[str, Callable[[], Any]]
) -> None:
    copy_template(corpus_template, tmp_path)
    workspace = Workspace(tmp_path, services)
    argv = bad.build(workspace)
    before = snapshot_store(workspace, bad.store)

    try:
        result = CliRunner().invoke(main, argv)
    finally:
        for cleanup in workspace.cleanups:
            cleanup()

    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert isinstance(result.exception, SystemExit) or result.exception is None, repr(result.exception)
    errors, stray = error_lines(result.stderr)
    assert len(errors) == 1, f"expected one error line, got: {result.stderr!r}"
    assert not stray, f"unexpected stderr lines: {stray}"
    [line] = errors
    for expected in bad.expect:
        assert expected in line, f"{expected!r} not in {line!r}"
    assert result.exit_code == bad.exit_code, f"exit {result.exit_code}: {line}"
    assert snapshot_store(workspace, bad.store) == before, "the store changed"
