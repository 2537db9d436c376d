"""Hole 2: any spelling of a protection key with a protecting value protects; conflicting values protect.

Tags used to be lower-cased into a dict, so ``{"Environment": "Production", "environment": "dev"}``
kept whichever spelling the API listed last: the same resource was protected or not by API order.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from typing import Any

import pytest

from spendwatch.killswitch.config import Protection
from spendwatch.killswitch.engine import run_killswitch
from spendwatch.killswitch.safety import owner_from_labels, protecting_tag
from spendwatch.store import Store
from tests.doubles.clock import FixedClock
from tests.killswitch.factories import NOW, job, rule, settings

CONFLICTS = [
    [("Environment", "Production"), ("environment", "dev")],
    [("ENV", "prod"), ("env", "staging"), ("Env", "test")],
    [("spendwatch:protect", "false"), ("SpendWatch:Protect", "TRUE")],
    [("environment", " Production "), ("Environment", "")],
]


@pytest.mark.parametrize("tags", CONFLICTS)
def test_conflicting_spellings_protect_in_every_order(tags: list[tuple[str, str]]) -> None:
    for order in itertools.permutations(tags):
        assert protecting_tag(Protection(), dict(order)) is not None, order


def test_unprotecting_values_alone_do_not_protect() -> None:
    assert protecting_tag(Protection(), {"Environment": "dev", "environment": "staging", "team": "prod"}) is None


def test_a_key_listed_with_no_values_protects_whatever_the_spelling() -> None:
    protection = Protection(tags={"Keep": []})
    assert protecting_tag(protection, {"kEEP": ""}) is not None


def test_owner_from_conflicting_spellings_is_deterministic() -> None:
    one = owner_from_labels({"Owner": "bob", "owner": "ana"}, ["owner"])
    other = owner_from_labels({"owner": "ana", "Owner": "bob"}, ["owner"])
    assert one == other == "ana"  # the configured spelling wins over another spelling of it


def test_the_engine_skips_a_target_protected_by_any_spelling(tmp_path: Path) -> None:
    """A job whose labels carry a protecting and an unprotecting spelling: the hook never runs."""
    marker = tmp_path / "ran"
    hook: dict[str, Any] = {"command": [sys.executable, "-c", f"open({str(marker)!r}, 'w').close()"]}
    config = settings([rule("page", do="hook", how="enforce", when={"job": {}}, hook=hook)])
    clock = FixedClock(NOW)
    store = Store(tmp_path / "s.duckdb", clock=clock)
    for i, order in enumerate(itertools.permutations([("Environment", "Production"), ("environment", "dev")])):
        record = job("bigquery", f"bquxjob_{i}", provider="gcp", account="p", region="US", labels=dict(order))
        run = run_killswitch(config, store, clock, jobs=[record])
        assert not run.executed and "protected by tag" in run.skipped[0].reason
    assert not marker.exists()
