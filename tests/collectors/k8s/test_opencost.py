"""``opencost``: OpenCost's allocation API over HTTP on 127.0.0.1 → workload cost lines."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from spendwatch.collect import collect_source
from spendwatch.collectors.k8s.opencost import OpenCostConfig
from spendwatch.store import Store
from tests.doubles.clock import FixedClock
from tests.doubles.opencost import OpenCostServer, Workload

NOW = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
SINCE = datetime(2026, 11, 18, tzinfo=UTC)
WORKLOADS = [
    Workload("onprem-a", "research", "Job", "llm-pretrain", 4.0, gpu_per_hour=24.0, ram_per_hour=0.5,
             labels={"owner": "fatima.zahra@example.com", "team": "ml-research", "job-name": "llm-pretrain"}),
    Workload("onprem-a", "serving", "Deployment", "ranker", 1.5, ram_per_hour=0.25, labels={"team": "serving"}),
]  # fmt: skip


@pytest.fixture
def opencost() -> Iterator[OpenCostServer]:
    server = OpenCostServer(WORKLOADS).start()
    yield server
    server.stop()


def _config(server: OpenCostServer, **extra: object) -> OpenCostConfig:
    values = {"name": "opencost", "type": "opencost", "endpoint": server.endpoint, "backfill": "3d", **extra}
    return OpenCostConfig.model_validate(values)


def test_hourly_allocations_load_with_the_fixtures_own_total(opencost: OpenCostServer, tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb", clock=FixedClock(NOW))
    run = collect_source(_config(opencost), store, FixedClock(NOW), since=SINCE)
    assert run.error is None and not run.problems, (run.error, run.problems)

    until = NOW.replace(minute=0)
    [(total, lines)] = store.query("SELECT sum(billed_cost), count(*) FROM cost_lines")
    assert total == pytest.approx(opencost.expected_total(SINCE, until), abs=1e-6)
    assert [r["window"] for r in opencost.requests] == [
        "2026-11-18T00:00:00Z,2026-11-19T00:00:00Z",
        "2026-11-19T00:00:00Z,2026-11-20T00:00:00Z",
        "2026-11-20T00:00:00Z,2026-11-20T09:00:00Z",
    ]
    assert {r["aggregate"] for r in opencost.requests} == {"cluster,namespace,controllerKind,controller"}
    by_workload = dict(
        store.query("SELECT coalesce(k8s_workload, '(none)'), round(sum(billed_cost), 6) FROM cost_lines GROUP BY ALL")
    )
    hours = (until - SINCE).total_seconds() / 3600
    assert by_workload["llm-pretrain"] == pytest.approx(28.5 * 1.01 * hours)
    assert by_workload["(none)"] == pytest.approx(1.25 * hours)  # idle: capacity nobody requested
    gpu = store.query(
        "SELECT DISTINCT owner, k8s_cluster, k8s_namespace, resource_id, tags['k8s-label/team'], is_estimated "
        "FROM cost_lines WHERE sku_id = 'gpu'"
    )
    assert gpu == [
        ("fatima.zahra@example.com", "onprem-a", "research", "k8s://onprem-a/research/Job/llm-pretrain", "ml-research",
         True)
    ]  # fmt: skip
    skus = {r[0] for r in store.query("SELECT DISTINCT sku_id FROM cost_lines")}
    assert skus == {"cpu", "gpu", "ram", "adjustment"}  # the components add up to OpenCost's totalCost
    assert lines > 0


def test_a_second_run_replaces_the_restatement_window_without_doubling(
    opencost: OpenCostServer, tmp_path: Path
) -> None:
    clock = FixedClock(NOW)
    store = Store(tmp_path / "s.duckdb", clock=clock)
    collect_source(_config(opencost), store, clock, since=SINCE)
    clock.set(NOW + timedelta(hours=5))
    opencost.requests.clear()
    run = collect_source(_config(opencost), store, clock, since=SINCE)
    assert run.error is None
    assert opencost.requests[0]["window"].startswith("2026-11-18T09:00:00Z")  # loaded_until - 2 days of restatement
    [(total,)] = store.query("SELECT sum(billed_cost) FROM cost_lines")
    assert total == pytest.approx(opencost.expected_total(SINCE, (NOW + timedelta(hours=5)).replace(minute=0)))


def test_a_failing_day_is_a_problem_naming_the_url_and_the_other_days_load(
    opencost: OpenCostServer, tmp_path: Path
) -> None:
    store = Store(tmp_path / "s.duckdb", clock=FixedClock(NOW))
    opencost.fail_next(500)
    run = collect_source(_config(opencost), store, FixedClock(NOW), since=SINCE)
    [problem] = run.problems
    assert "OpenCost answered HTTP 500" in problem and opencost.endpoint + "/allocation?window=2026-11-18" in problem
    assert store.query("SELECT min(charge_period_start) FROM cost_lines")[0][0] == datetime(2026, 11, 19, tzinfo=UTC)


def test_a_malformed_allocation_loads_nothing_for_that_day(opencost: OpenCostServer, tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb", clock=FixedClock(NOW))
    bad = opencost.answer({"window": "2026-11-18T00:00:00Z,2026-11-18T01:00:00Z", "step": "1h"})
    bad["data"][0]["onprem-a/research/Job/llm-pretrain"]["gpuCost"] = "lots"
    opencost.override = bad
    run = collect_source(_config(opencost), store, FixedClock(NOW), since=SINCE)
    assert run.problems and all("malformed allocation 'onprem-a/research/Job/llm-pretrain'" in p for p in run.problems)
    assert all("gpuCost is 'lots', not a number" in p for p in run.problems)
    assert store.query("SELECT count(*) FROM cost_lines")[0][0] == 0


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"endpoint": "opencost:9003"}, "endpoint"),
        ({"step": "5m"}, "step"),
        ({"kubernetes": {"owner_labels": ["bad key!"]}}, "is not a Kubernetes label key"),
    ],
)
def test_bad_config_is_refused(extra: dict[str, object], problem: str) -> None:
    values = {"name": "opencost", "type": "opencost", "endpoint": "http://opencost:9003", **extra}
    with pytest.raises(ValidationError, match=problem):
        OpenCostConfig.model_validate(values)
