"""SIGKILL at 20 seeded moments of each pass: the store opens, a re-run converges, nothing happens twice.

For collect and detect (test_crash_effects.py: a kill-switch pass and a digest send) a counting child lists the moments a
clean run goes through (``crash_ops``: SQL statements, AWS calls, SMTP steps, before and after). Twenty
of them are drawn with a fixed seed; for each, a fresh copy of the starting state is run in a child
that stops at that moment and is SIGKILLed there by this process. Then:

Besides the twenty, every moment around the calls that must never happen twice is a kill too: before
and after each StopInstances, and each SMTP step (MAIL, RCPT, DATA) before and after its answer.

* the store file reads end to end (``check_file``);
* the pass, run again here, converges to exactly what the clean run left (totals, incidents, actions);
* no kill-switch action reaches AWS twice (a proxy counts every StopInstances) and is journaled done
  once; no digest reaches the SMTP server twice.

Children fork from a forkserver that has spendwatch imported, so a kill costs milliseconds of start-up
instead of seconds; what they do after the fork is the real code, in a real separate process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.reliability import crash_ops as ops
from tests.reliability.crash import cost_totals, crash_and_recover, incidents, loads, open_store, restore

pytestmark = pytest.mark.slow


def test_collect_killed_anywhere_converges_to_the_clean_totals(forks: Any, estate: Any, tmp_path: Path) -> None:
    clean = tmp_path / "clean"
    restore(estate("empty"), clean)
    ops.collect(clean)
    expected = (cost_totals(open_store(clean)), loads(open_store(clean)))
    assert expected[0], "the clean collection stored nothing"

    for _, moment, folder, _ in crash_and_recover(
        forks, tmp_path, estate("empty"), ops.Job("collect", ""), recover=ops.collect
    ):
        store = open_store(folder)
        assert (cost_totals(store), loads(store)) == expected, f"killed at {moment!r}"


def test_detect_killed_anywhere_converges_to_the_clean_incidents(forks: Any, estate: Any, tmp_path: Path) -> None:
    clean = tmp_path / "clean"
    restore(estate("collected"), clean)
    ops.detect(clean)
    expected = incidents(open_store(clean))
    assert expected, "the clean detection opened no incident"

    for _, moment, folder, _ in crash_and_recover(
        forks, tmp_path, estate("collected"), ops.Job("detect", ""), recover=ops.detect
    ):
        found = incidents(open_store(folder))
        assert found == expected, f"killed at {moment!r}"
