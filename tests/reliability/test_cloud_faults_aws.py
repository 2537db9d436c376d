"""Cloud faults for every AWS source: 5xx, throttling, a timeout, a page failing half-way, credentials expiring.

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
def proxy(moto_server: Any) -> Iterator[Any]:
    from tests.doubles.aws_faults import FaultProxy

    faults = FaultProxy(moto_server.endpoint_url)
    yield faults
    faults.stop()


SOURCES: dict[str, Callable[..., Scenario]] = {
    "aws-cost-explorer": scenarios.CostExplorer,
    "aws-data-export": scenarios.DataExport,
    "aws-jobs": scenarios.AwsJobs,
}


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_an_aws_source_survives_every_fault(kind: str, moto_server: Any, proxy: Any, tmp_path: Path) -> None:
    run_matrix(SOURCES[kind](moto_server, proxy), tmp_path)
