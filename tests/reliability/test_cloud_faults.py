"""Cloud faults for every source: 5xx, throttling, a timeout, a page failing half-way, credentials expiring.

For each source (``fault_scenarios``) and each fault, through the daemon's own collection job:

1. version A of the cloud's data is collected cleanly;
2. the cloud restates it (version B) and starts failing: the run fails with one line, recorded in
   ``runs`` and counted as a consecutive failure, and every unit the store holds (a charge period, a
   platform's jobs, an account's projects) is still wholly A or already wholly B — nothing partial;
3. the fault clears: the next run succeeds, the failure count resets and the store holds B, exactly as
   a clean collection of B would.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from spendwatch.daemon import DaemonContext, collect_job
from spendwatch.health import readiness
from spendwatch.store import Store
from tests.doubles.aws_faults import FaultProxy
from tests.doubles.clock import FixedClock
from tests.reliability import fault_scenarios as scenarios
from tests.reliability.fault_scenarios import FAULTS, NOW, Scenario

pytestmark = pytest.mark.slow
OUTCOMES: list[str] = []  # one line per source × fault, printed for docs/reliability.md


@pytest.fixture
def proxy(moto_server: Any) -> Iterator[FaultProxy]:
    faults = FaultProxy(moto_server.endpoint_url)
    yield faults
    faults.stop()


@pytest.fixture
def google() -> Iterator[Any]:
    from tests.doubles.google import GoogleApiServer

    server = GoogleApiServer().start()
    yield server
    server.stop()


def collect(scenario: Scenario, store: Store) -> tuple[DaemonContext, dict[str, Any]]:
    """One run of the daemon's collection job; returns its context and the run it recorded."""
    ctx = DaemonContext(scenario.config, store, FixedClock(NOW), clients={scenario.name: scenario.clients})
    collect_job(ctx, scenario.name)
    [row] = store.query(
        "SELECT status, error, detail FROM runs WHERE job = ? ORDER BY id DESC LIMIT 1", [f"collect:{scenario.name}"]
    )
    return ctx, {"status": row[0], "error": row[1], "detail": row[2]}


def run_matrix(scenario: Scenario, folder: Path) -> None:
    template = folder / "A.duckdb"  # version A, collected once; each fault starts from a copy
    scenario.publish("A")
    assert collect(scenario, Store(template, clock=FixedClock(NOW)))[1]["status"] == "ok"
    old = scenario.units(Store(template))
    clean = _copy(template, folder / "clean.duckdb")
    scenario.publish("B")
    assert collect(scenario, clean)[1]["status"] == "ok"
    expected = scenario.units(clean)
    assert old and expected and old != expected, "version B must change what is stored"

    for fault in FAULTS:
        began = time.monotonic()
        store = _copy(template, folder / f"{fault}.duckdb")
        scenario.publish("B")
        scenario.inject(fault)
        ctx, failed = collect(scenario, store)
        message = failed["error"] or str(failed["detail"])
        assert failed["status"] in ("failed", "partial"), (fault, failed)
        assert "\n" not in message, message
        during = scenario.units(store)
        for unit in set(during) | set(old) | set(expected):
            assert during.get(unit) in (old.get(unit), expected.get(unit)), f"{fault}: {unit} stored partly"
        job = f"collect:{scenario.name}"
        if failed["status"] == "failed":
            assert ctx.failures[job] == 1, "the daemon did not count the failure"

        scenario.clear()
        scenario.publish("B")
        ctx, recovered = collect(scenario, store)
        assert recovered["status"] == "ok", (fault, recovered)
        assert ctx.failures.get(job, 0) == 0
        assert scenario.units(store) == expected, f"{fault}: the next run did not converge"
        ready, detail = readiness(scenario.config, store, FixedClock(NOW))
        assert ready, detail
        seconds = time.monotonic() - began
        OUTCOMES.append(f"{scenario.name:<13} {fault:<19} {failed['status']:<8} {seconds:5.1f}s {_short(message)}")


def _copy(template: Path, target: Path) -> Store:
    shutil.copy(template, target)
    return Store(target, clock=FixedClock(NOW))


def _short(text: Any) -> str:
    value = str(text)
    return value if len(value) <= 150 else value[:147] + "..."


SOURCES: dict[str, Callable[..., Scenario]] = {
    "aws-cost-explorer": scenarios.CostExplorer,
    "aws-data-export": scenarios.DataExport,
    "aws-jobs": scenarios.AwsJobs,
}


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_an_aws_source_survives_every_fault(kind: str, moto_server: Any, proxy: FaultProxy, tmp_path: Path) -> None:
    run_matrix(SOURCES[kind](moto_server, proxy), tmp_path)


GOOGLE: dict[str, Callable[..., Scenario]] = {
    "gcp-billing-export": scenarios.BillingExport,
    "gcp-jobs": scenarios.GcpJobs,
    "gcp-billing-accounts": scenarios.BillingAccounts,
}


@pytest.mark.parametrize("kind", sorted(GOOGLE))
def test_a_google_source_survives_every_fault(kind: str, google: Any, tmp_path: Path) -> None:
    run_matrix(GOOGLE[kind](google), tmp_path)


def test_zz_print_the_outcomes() -> None:
    """The table docs/reliability.md quotes (run with -s)."""
    for line in OUTCOMES:
        print(line)
