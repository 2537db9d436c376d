"""SIGTERM during a long collection or detection: the work stops at a safe point, nothing half-written.

The daemon's stop event is set by the test at a chosen step of a source (no timing involved): the
collection runner must keep the periods already committed, write nothing after the stop, save no
change marker (so the next run collects the rest), and record the run as ``interrupted``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar, Literal

import pyarrow as pa
import pytest

from spendwatch.collect import collect_source
from spendwatch.collectors.base import SOURCES, CollectWindow, CostBatch, Source, SourceConfig
from spendwatch.errors import Interrupted
from spendwatch.store import Store
from spendwatch.store.schema import COST_LINE_SCHEMA, conform
from tests.doubles.clock import FixedClock

NOW = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
MONTHS = [datetime(2026, m, 1, tzinfo=UTC) for m in (8, 9, 10, 11)]


class StepSourceConfig(SourceConfig):
    type: Literal["test-steps"] = "test-steps"


class StepSource(Source):
    """Yields one month per step; ``on_step`` runs (e.g. sets the stop) before each month is built."""

    config_model: ClassVar[type[SourceConfig]] = StepSourceConfig
    on_step: ClassVar[Callable[[int, Source], None]] = staticmethod(lambda step, source: None)

    def collect(self, window: CollectWindow) -> Iterator[CostBatch]:
        for step, start in enumerate(MONTHS):
            type(self).on_step(step, self)
            self.context.count("api_calls")  # what a real source does per request: a safe point
            end = MONTHS[step + 1] if step + 1 < len(MONTHS) else datetime(2026, 12, 1, tzinfo=UTC)
            yield CostBatch(start, end, _lines(start, 100.0 + step), label=f"month {step}")
        self.context.store.set_state(self.name, "fingerprint", "all-months")


def _lines(day: datetime, cost: float) -> pa.Table:
    rows = {
        "provider": ["aws"],
        "sub_account_id": ["111111111111"],
        "service_name": ["Amazon EC2"],
        "charge_category": ["Usage"],
        "charge_period_start": [day],
        "charge_period_end": [day + timedelta(days=1)],
        "billed_cost": [cost],
        "effective_cost": [cost],
        "billing_currency": ["USD"],
    }
    return conform(pa.table(rows), COST_LINE_SCHEMA)


@pytest.fixture
def step_source(monkeypatch: pytest.MonkeyPatch) -> type[StepSource]:
    monkeypatch.setitem(SOURCES._plugins, "test-steps", StepSource)
    monkeypatch.setattr(StepSource, "on_step", staticmethod(lambda step, source: None))
    return StepSource


def _collect(store: Store, stop: threading.Event) -> tuple[int, bool, str | None]:
    config = StepSourceConfig(name="steps", type="test-steps")
    run = collect_source(config, store, FixedClock(NOW), since=MONTHS[0], stop=stop)
    return run.periods, run.interrupted, run.error


def _stored(store: Store) -> list[tuple[str, int]]:
    rows = store.query("SELECT strftime(charge_period_start, '%Y-%m'), count(*) FROM cost_lines GROUP BY 1 ORDER BY 1")
    return [(str(month), int(count)) for month, count in rows]


def test_a_stop_between_periods_keeps_whole_periods_and_no_marker(
    tmp_path: Path, step_source: type[StepSource]
) -> None:
    store = Store(tmp_path / "s.duckdb")
    store.migrate()
    stop = threading.Event()
    step_source.on_step = staticmethod(lambda step, source: stop.set() if step == 2 else None)

    periods, interrupted, error = _collect(store, stop)

    assert (periods, interrupted, error) == (2, True, None)
    assert _stored(store) == [("2026-08", 1), ("2026-09", 1)]
    assert store.get_state("steps", "fingerprint") is None  # the next run collects the rest
    status = store.query("SELECT status FROM runs WHERE job = 'collect:steps'")
    assert [s for (s,) in status] == ["interrupted"]

    # The next start (no stop) converges to the full, clean load.
    step_source.on_step = staticmethod(lambda step, source: None)
    assert _collect(store, threading.Event()) == (4, False, None)
    assert _stored(store) == [("2026-08", 1), ("2026-09", 1), ("2026-10", 1), ("2026-11", 1)]
    assert store.get_state("steps", "fingerprint") == "all-months"


def test_a_stop_set_while_a_period_is_being_written_lets_that_period_commit(
    tmp_path: Path, step_source: type[StepSource], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path / "s.duckdb")
    store.migrate()
    stop = threading.Event()
    real_replace = store.replace_cost_lines

    def replace_then_stop(*args: object, **kwargs: object) -> object:
        result = real_replace(*args, **kwargs)  # type: ignore[arg-type]
        stop.set()  # SIGTERM arrives while the first period is being written
        return result

    monkeypatch.setattr(store, "replace_cost_lines", replace_then_stop)
    periods, interrupted, _ = _collect(store, stop)
    assert (periods, interrupted) == (1, True)
    assert _stored(store) == [("2026-08", 1)]


def test_a_stop_already_set_writes_nothing(tmp_path: Path, step_source: type[StepSource]) -> None:
    store = Store(tmp_path / "s.duckdb")
    store.migrate()
    stop = threading.Event()
    stop.set()
    assert _collect(store, stop) == (0, True, None)
    assert _stored(store) == []


def test_sources_reach_a_safe_point_wherever_they_count_or_report(tmp_path: Path) -> None:
    from spendwatch.collectors.base import SourceContext

    stop = threading.Event()
    context = SourceContext(clock=FixedClock(NOW), store=Store(tmp_path / "s.duckdb"), stop=stop)
    context.count("aws_requests")  # not stopping: counts
    stop.set()
    with pytest.raises(Interrupted):
        context.count("aws_requests")
    assert context.counters["aws_requests"] == 2.0  # the request that was made is still counted


def test_detection_stops_between_monitors(tmp_path: Path) -> None:
    from spendwatch.config import parse_config
    from spendwatch.detect.runner import run_detection

    config = parse_config(
        "store: {path: s.duckdb}\n"
        "sources: [{name: demo, type: simulated}]\n"
        "monitors:\n"
        "  - {name: by-account, dimensions: [sub_account_id]}\n"
        "  - {name: by-service, dimensions: [service_name]}\n",
        tmp_path / "spendwatch.yaml",
        environ={},
    )
    store = Store(tmp_path / "s.duckdb")
    store.migrate()
    stop = threading.Event()
    stop.set()
    with pytest.raises(Interrupted):
        run_detection(config, store, FixedClock(NOW), stop=stop)
    assert [s for (s,) in store.query("SELECT status FROM runs WHERE job = 'detect'")] == ["interrupted"]
