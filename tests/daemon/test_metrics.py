"""The store collector: what /metrics says about a real store, with bounded labels; readiness; housekeeping."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from spendwatch.daemon import housekeeping
from spendwatch.daemon.health import readiness
from spendwatch.daemon.metrics import StoreCollector
from spendwatch.store import Store
from tests.doubles.clock import FixedClock
from tests.notify.estate import NOW, copy_store, load, write_config


def test_metrics_read_the_store_with_bounded_labels(tmp_path: Path, estate_store: Path) -> None:
    config = load(write_config(tmp_path))
    copy_store(estate_store, tmp_path)
    clock = FixedClock(NOW)
    store = Store(config.store.path, clock=clock)
    clock.advance(minutes=1)
    for job, counters in (("collect:demo-estate", {"api_calls": 3, "bytes_billed": 1e12}), ("collect:removed", {})):
        run_id = store.start_run(job)
        store.finish_run(run_id, status="ok", rows=7, detail=counters)
    store.finish_run(store.start_run("detect"), status="failed", error="boom")
    registry = CollectorRegistry(auto_describe=False)
    StoreCollector(config, store, registry=registry)

    text = generate_latest(registry).decode()

    assert "spendwatch_up 1.0" in text
    assert 'spendwatch_source_rows_collected{source="demo-estate"} 7.0' in text
    assert 'spendwatch_source_counter_total{counter="api_calls",source="demo-estate"} 3.0' in text
    assert 'spendwatch_source_counter_total{counter="bytes_billed",source="demo-estate"} 1e+12' in text
    assert 'spendwatch_job_consecutive_failures{job="detect"} 1.0' in text
    assert "removed" not in text  # a source the config no longer names is not exported
    assert 'spendwatch_incidents_open{severity="high"}' in text
    assert 'spendwatch_actions{state="awaiting-approval"} 0.0' in text
    assert len([line for line in text.splitlines() if line.startswith("spendwatch_series_scored ")]) == 1


def test_metrics_say_down_when_the_store_cannot_be_read(tmp_path: Path) -> None:
    config = load(write_config(tmp_path))
    (tmp_path / "store.duckdb").write_text("not a database")
    registry = CollectorRegistry(auto_describe=False)
    StoreCollector(config, Store(config.store.path, lock_timeout=1), registry=registry)
    assert "spendwatch_up 0.0" in generate_latest(registry).decode()


def test_readiness_names_the_stale_source(tmp_path: Path, estate_store: Path) -> None:
    config = load(write_config(tmp_path))
    copy_store(estate_store, tmp_path)
    clock = FixedClock(NOW)
    store = Store(config.store.path, clock=clock)
    ready, detail = readiness(config, store, clock)
    assert ready and detail["sources"] == {"demo-estate": "ok"}
    clock.advance(hours=5)  # every 1h: stale after 3h10m
    ready, detail = readiness(config, store, clock)
    assert not ready and detail["sources"]["demo-estate"].startswith("stale: last good collection")


def test_housekeeping_deletes_only_what_is_past_retention(tmp_path: Path, estate_store: Path) -> None:
    config = load(write_config(tmp_path))
    copy_store(estate_store, tmp_path)
    store = Store(config.store.path, clock=FixedClock(NOW))
    [(before,)] = store.query("SELECT count(*) FROM cost_lines")
    cutoff = NOW - timedelta(days=30)
    [(old,)] = store.query("SELECT count(*) FROM cost_lines WHERE charge_period_end < ?", [cutoff])

    deleted = housekeeping(store, cutoff)

    assert deleted["cost_lines"] == old > 0
    assert store.query("SELECT count(*) FROM cost_lines") == [(before - old,)]
    assert json.dumps(deleted)  # JSON-able: it is stored as the run's detail
