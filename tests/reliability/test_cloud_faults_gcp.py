"""Cloud faults for every Google Cloud source: 5xx, throttling, a timeout, a page failing half-way, credentials expiring.

For each source (``fault_scenarios``) and each fault, through the daemon's own collection job:

1. version A of the cloud's data is collected cleanly;
2. the cloud restates it (version B) and starts failing: the run fails with one line, recorded in
   ``runs`` and counted as a consecutive failure, and every unit the store holds (a charge period, a
   platform's jobs, an account's projects) is still wholly A or already wholly B — nothing partial;
3. the fault clears: the next run succeeds, the failure count resets, ``/readyz``'s check passes and
   the store holds B, exactly as a clean collection of B would.

Run with ``-s`` for the table docs/reliability.md quotes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.reliability import fault_scenarios as scenarios
from tests.reliability.fault_scenarios import Scenario, run_matrix

pytestmark = pytest.mark.slow


@pytest.fixture
def google() -> Iterator[Any]:
    from tests.doubles.google import GoogleApiServer

    server = GoogleApiServer().start()
    yield server
    server.stop()


SOURCES: dict[str, Callable[..., Scenario]] = {
    "gcp-billing-export": scenarios.BillingExport,
    "gcp-jobs": scenarios.GcpJobs,
    "gcp-billing-accounts": scenarios.BillingAccounts,
}


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_a_google_source_survives_every_fault(kind: str, google: Any, tmp_path: Path) -> None:
    run_matrix(SOURCES[kind](google), tmp_path)
