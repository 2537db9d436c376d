"""Sharded detection over worker processes: the same decisions as one process, to the bit; the worker count."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from spendwatch.detect.model import DetectionResult, Detector, ModelParams
from spendwatch.detect.parallel import (
    Shard,
    WorkerFailed,
    available_cpus,
    concatenate,
    fit_stream,
    shard_rows,
)

FIELDS = ("expected", "lower", "upper", "score", "is_anomaly", "kind", "is_drop")


def fleet(n_series: int, n_steps: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Weekly bills with spikes, level shifts, idle batch jobs, gaps and late starts."""
    rng = np.random.default_rng(seed)
    stamps = np.datetime64("2025-03-01", "D") + np.arange(n_steps) * np.timedelta64(1, "D")
    level = np.exp(rng.uniform(0, 9, n_series))[:, None]
    weekend = np.where(np.arange(n_steps) % 7 >= 5, rng.uniform(0.3, 1.0, n_series)[:, None], 1.0)
    values = (
        level * weekend * np.exp(rng.uniform(0.02, 0.4, n_series)[:, None] * rng.standard_normal((n_series, n_steps)))
    )
    values[rng.random(n_series) < 0.2] *= rng.random((1, n_steps)) < 0.5
    spikes = rng.random((n_series, n_steps)) < 0.01
    values[spikes] *= rng.uniform(3, 20, int(spikes.sum()))
    shifted = rng.random(n_series) < 0.1
    values[shifted, n_steps - 20 :] *= 3
    values[rng.random((n_series, n_steps)) < 0.02] = np.nan
    for row in np.flatnonzero(rng.random(n_series) < 0.05):
        values[row, : rng.integers(1, n_steps - 10)] = np.nan
    return values, stamps


def split(values: np.ndarray, rebase: np.ndarray, rows: int, keep: np.ndarray | None = None) -> list[tuple[int, Shard]]:
    return [
        (lo, Shard(values[lo : lo + rows], rebase[lo : lo + rows], None if keep is None else keep[lo : lo + rows]))
        for lo in range(0, len(values), rows)
    ]


def assert_same(a: DetectionResult, b: DetectionResult) -> None:
    assert a.start == b.start
    for name in FIELDS:
        got, want = getattr(a, name), getattr(b, name)
        assert got.dtype == want.dtype and got.shape == want.shape, name
        # bit for bit: NaN where NaN, every float identical (not merely close)
        np.testing.assert_array_equal(got, want, err_msg=name, strict=True)


@pytest.mark.parametrize("workers", [1, 3])
def test_shards_over_workers_decide_exactly_what_one_process_decides(workers: int) -> None:
    values, stamps = fleet(410, 150)
    rng = np.random.default_rng(5)
    rebase = np.where(rng.random(len(values)) < 0.1, rng.integers(0, 150, len(values)), -1)
    params = ModelParams.for_granularity("daily", sensitivity=1.3)
    whole = Detector(params).fit(values, stamps, decide_from=115, rebase_at=rebase)
    assert whole.is_anomaly.any() and whole.is_drop.any()  # the panel exercises both decisions

    shards = split(values, rebase, 37)  # uneven: the last shard is short
    results = list(fit_stream(params, stamps, shards, decide_from=115, workers=workers))
    assert [tag for tag, _ in results] == [tag for tag, _ in shards]  # in the order given
    for (lo, part), (_, shard) in zip(results, shards, strict=True):
        np.testing.assert_array_equal(part.rows, np.arange(len(shard.values)))
        assert lo % 37 == 0
    assert_same(concatenate(r.result for _, r in results), whole)


def test_declared_recurring_charges_travel_with_their_shard() -> None:
    values, stamps = fleet(300, 150, seed=11)
    days = (stamps.astype("datetime64[D]") - stamps.astype("datetime64[M]")).astype(int) + 1
    declared = np.full(values.shape, np.nan)
    fee_rows = np.r_[10:20, 200:206]  # two runs of series, in different shards below
    fee = np.where(days == 5, 4000.0, 0.0)[None, :] * np.where(fee_rows >= 200, 3.0, 1.0)[:, None]
    fee[fee_rows >= 200, -10:] *= 3  # the newest fee of the second run is three times the earlier ones
    declared[fee_rows] = fee
    values[fee_rows] = np.nan_to_num(values[fee_rows]) + fee
    params = ModelParams.for_granularity("daily")
    whole = Detector(params).fit(values, stamps, decide_from=110, declared=declared)
    undeclared = Detector(params).fit(values, stamps, decide_from=110)
    assert not np.array_equal(whole.is_anomaly[fee_rows], undeclared.is_anomaly[fee_rows])  # declaring matters

    rebase = np.full(len(values), -1)
    shards = []
    for lo, shard in split(values, rebase, 37):
        part = declared[lo : lo + 37]
        # as the panel streams it: a shard without a recurring dollar carries no declared block
        shards.append((lo, Shard(shard.values, shard.rebase_at, declared=part if np.nansum(part) else None)))
    assert sum(shard.declared is None for _, shard in shards) >= 5
    results = list(fit_stream(params, stamps, shards, decide_from=110, workers=2))
    assert_same(concatenate(r.result for _, r in results), whole)


def test_hourly_series_on_local_clocks_decide_the_same_in_shards() -> None:
    """An hourly fleet working New York business hours across the March clock change: the monitor's
    time zones travel in the params, so every worker tries the same local clocks."""
    rng = np.random.default_rng(4)
    n_series, n_steps = 60, 24 * 41  # five weeks of winter time, then the days right after the change
    stamps = np.datetime64("2026-02-01T00", "h") + np.arange(n_steps).astype("timedelta64[h]")
    local_hour = (stamps - np.timedelta64(5, "h") + (stamps >= np.datetime64("2026-03-08T07", "h"))).astype(int) % 24
    busy = ((local_hour >= 9) & (local_hour < 18)).astype(float)
    level = np.exp(rng.uniform(1, 6, n_series))[:, None]
    values = level * (0.2 + busy[None, :]) * np.exp(0.05 * rng.standard_normal((n_series, n_steps)))
    values[rng.random((n_series, n_steps)) < 0.002] *= 8
    decide_from = n_steps - 24 * 5
    params = ModelParams.for_granularity("hourly", time_zones=("America/New_York",))
    whole = Detector(params).fit(values, stamps.astype("datetime64[s]"), decide_from=decide_from)
    utc_only = Detector(ModelParams.for_granularity("hourly", time_zones=())).fit(
        values, stamps.astype("datetime64[s]"), decide_from=decide_from
    )
    assert whole.is_anomaly.any()
    assert not np.array_equal(whole.expected, utc_only.expected)  # the local clock was used

    shards = split(values, np.full(n_series, -1), 7)
    results = list(fit_stream(params, stamps.astype("datetime64[s]"), shards, decide_from=decide_from, workers=2))
    assert_same(concatenate(r.result for _, r in results), whole)


def test_flagged_only_returns_the_flagged_and_the_kept_rows() -> None:
    values, stamps = fleet(200, 120, seed=8)
    rebase = np.full(len(values), -1)
    params = ModelParams.for_granularity("daily")
    whole = Detector(params).fit(values, stamps, decide_from=90)
    flagged = whole.is_anomaly.any(axis=1) | whole.is_drop.any(axis=1)
    keep = np.zeros(len(values), dtype=bool)
    keep[np.flatnonzero(~flagged)[:5]] = True  # quiet series with an open incident must come back too
    shards = split(values, rebase, 64, keep)
    rows: list[int] = []
    for lo, part in fit_stream(params, stamps, shards, decide_from=90, workers=2, flagged_only=True):
        rows += [lo + int(r) for r in part.rows]
        for name in FIELDS:
            np.testing.assert_array_equal(getattr(part.result, name), getattr(whole, name)[lo + part.rows])
    assert rows == list(np.flatnonzero(flagged | keep))
    assert 0 < len(rows) < len(values)


class _DiesWhenUnpickled(np.ndarray):  # type: ignore[type-arg]
    """A panel whose unpickling ends the worker process at once, as the kernel's OOM killer would."""

    def __reduce__(self) -> Any:
        return (os._exit, (3,))


def test_a_dead_worker_is_one_clear_error() -> None:
    values, stamps = fleet(20, 60)
    poison = values[:10].view(_DiesWhenUnpickled)
    shards = [(0, Shard(values[:10])), (1, Shard(poison))]
    params = ModelParams.for_granularity("daily")
    with pytest.raises(WorkerFailed, match=r"worker process died .*detection\.workers"):
        list(fit_stream(params, stamps, shards, decide_from=50, workers=2))


def test_shard_rows_bounds_cells_per_shard() -> None:
    assert shard_rows(200, cells=4_000_000) == 20_000
    assert shard_rows(1344, cells=4_000_000) == 2976
    assert shard_rows(10**9, cells=10) == 1


# -- the default worker count ------------------------------------------------------------------


def _cgroup(tmp_path: Path, proc: str, files: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "sys-fs-cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    root.mkdir(exist_ok=True)
    (tmp_path / "cgroup").write_text(proc)
    return tmp_path / "cgroup", root


def test_cgroup_v2_quota_caps_the_affinity(tmp_path: Path) -> None:
    proc, root = _cgroup(
        tmp_path,
        "0::/kubepods/pod1/app\n",
        {"kubepods/pod1/app/cpu.max": "150000 100000\n", "kubepods/cpu.max": "max 100000"},
    )
    assert available_cpus(affinity=16, proc_cgroup=proc, cgroup_root=root) == 2  # 1.5 CPUs, rounded up
    assert available_cpus(affinity=1, proc_cgroup=proc, cgroup_root=root) == 1


def test_cgroup_v2_tightest_ancestor_wins_and_unlimited_is_the_affinity(tmp_path: Path) -> None:
    proc, root = _cgroup(tmp_path, "0::/a/b\n", {"a/cpu.max": "300000 100000", "a/b/cpu.max": "max 100000"})
    assert available_cpus(affinity=8, proc_cgroup=proc, cgroup_root=root) == 3
    proc, root = _cgroup(tmp_path / "free", "0::/a\n", {"a/cpu.max": "max 100000"})
    assert available_cpus(affinity=8, proc_cgroup=proc, cgroup_root=root) == 8


def test_cgroup_v2_inside_a_namespace_reads_the_mount_itself(tmp_path: Path) -> None:
    # the host path in /proc/self/cgroup does not exist under a namespaced mount: the mount is the container
    proc, root = _cgroup(tmp_path, "0::/kubepods/burstable/pod9/c0ffee\n", {"cpu.max": "200000 100000"})
    assert available_cpus(affinity=64, proc_cgroup=proc, cgroup_root=root) == 2


def test_cgroup_v1_cfs_quota(tmp_path: Path) -> None:
    proc, root = _cgroup(
        tmp_path,
        "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n",
        {"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "250000", "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000"},
    )
    assert available_cpus(affinity=32, proc_cgroup=proc, cgroup_root=root) == 3
    proc, root = _cgroup(
        tmp_path / "unlimited",
        "4:cpu,cpuacct:/\n",
        {"cpu,cpuacct/cpu.cfs_quota_us": "-1", "cpu,cpuacct/cpu.cfs_period_us": "100000"},
    )
    assert available_cpus(affinity=6, proc_cgroup=proc, cgroup_root=root) == 6


def test_no_cgroup_information_is_the_affinity(tmp_path: Path) -> None:
    assert available_cpus(affinity=5, proc_cgroup=tmp_path / "absent", cgroup_root=tmp_path) == 5
    assert available_cpus() >= 1  # this machine, whatever it is
    assert available_cpus() <= len(os.sched_getaffinity(0))


# -- the runner: the store's incidents are the same for any worker count and shard size -----------


def _estate(store: Any, start: Any, days: int, restated: bool) -> None:
    from datetime import timedelta

    from tests.doubles.lines import cost_lines

    rng = np.random.default_rng(21)
    rows = []
    for account in range(6):
        for service in range(9):
            level = float(np.exp(rng.uniform(3, 8)))
            spike = (account * 9 + service) % 7 == 0
            for day in range(days):
                cost = level * (0.6 if day % 7 >= 5 else 1.0) * float(np.exp(rng.normal(0, 0.05)))
                if spike and day >= days - 3 and not (restated and account % 2 == 0):
                    cost += 6 * level + 500  # half of them are restated away later
                if account == 5 and service == 2 and day >= days - 4:
                    cost *= 0.05  # a drop
                if (account + service) % 11 == 0 and day < days // 2:
                    continue  # a late start: NaN before its first line
                rows.append(
                    {
                        "start": start + timedelta(days=day),
                        "cost": cost,
                        "sub_account_id": f"{100000000000 + account}",
                        "service_name": f"Service {service}",
                        "billing_currency": "EUR" if service == 8 else "USD",
                    }
                )
    store.replace_cost_lines("bills", start, start + timedelta(days=days), cost_lines(rows))


def _run(tmp_path: Path, workers: int, shard_cells: int) -> list[tuple[Any, ...]]:
    from datetime import UTC, datetime, timedelta

    from spendwatch.config import parse_config
    from spendwatch.detect.incidents import give_feedback, load_incidents
    from spendwatch.detect.runner import detect, settings_from_config
    from spendwatch.store import Store
    from tests.doubles.clock import FixedClock

    start, days = datetime(2026, 3, 1, tzinfo=UTC), 120
    clock = FixedClock(start + timedelta(days=days, hours=3))
    cfg = parse_config(
        "store: {path: s.duckdb}\nsources:\n  - {name: bills, type: focus, path: unused, settle_lag: 2h}\n"
        "monitors:\n  - {name: svc, dimensions: [sub_account_id, service_name], granularity: [daily]}\n",
        tmp_path / "sw.yaml",
        environ={},
    )
    settings = settings_from_config(cfg)
    settings = type(settings)(**{**settings.__dict__, "workers": workers, "shard_cells": shard_cells})
    store = Store(cfg.store.path, clock=clock)
    _estate(store, start, days, restated=False)
    first = detect(cfg.monitors, store, clock, settings)
    opened = load_incidents(store)
    assert first.opened >= 5 and len(opened) >= 5
    odd = next(i for i in opened if int(i.dimensions["sub_account_id"]) % 2 == 1 and i.kind != "drop")
    give_feedback(store, odd.id, "expected", actor="test")  # a baseline: that series is rebased
    _estate(store, start, days, restated=True)  # some spikes are restated away: withdrawn
    clock.advance(hours=1)
    detect(cfg.monitors, store, clock, settings)
    return store.query("SELECT status, kind, feedback, * EXCLUDE (created_at, updated_at) FROM anomalies ORDER BY id")


def test_the_store_ends_the_same_for_any_worker_count_and_shard_size(tmp_path: Path) -> None:
    one = _run(tmp_path / "one", workers=1, shard_cells=10**9)  # one shard, in this process
    many = _run(tmp_path / "many", workers=2, shard_cells=7 * 121)  # shards of 7 series over 2 processes
    assert one == many
    # withdrawn by the restatement, still open, a drop, and a series rebased by feedback: every path ran
    assert {"withdrawn", "open", "reported"} <= {row[0] for row in one}
    assert any(row[1] == "drop" for row in one) and any(row[2] == "expected" for row in one)


def _hourly_estate(store: Any, start: Any, days: int) -> None:
    """Six accounts working New York business hours across the March clock change, one burst, and
    fees: declared recurring on acct-0 (its first) and acct-3 (three times the one before), and the
    same fee as acct-0's on acct-5 without a ChargeFrequency."""
    from datetime import timedelta

    from tests.doubles.lines import cost_lines

    rng = np.random.default_rng(8)
    rows: list[dict[str, Any]] = []
    for account in range(6):
        for service in range(3):
            level = float(np.exp(rng.uniform(1, 4)))
            for hour in range(days * 24):
                at = start + timedelta(hours=hour)
                local = (at.hour - (4 if at >= datetime(2026, 3, 8, 7, tzinfo=UTC) else 5)) % 24
                cost = level * (1.0 if 9 <= local < 18 else 0.2) * float(np.exp(rng.normal(0, 0.05)))
                if account == 1 and service == 0 and hour == days * 24 - 30:
                    cost *= 40
                rows.append({"start": at, "hours": 1, "cost": cost, "sub_account_id": f"acct-{account}",
                             "service_name": f"Service {service}"})  # fmt: skip
    feb, mar = datetime(2026, 2, 5, tzinfo=UTC), datetime(2026, 3, 5, tzinfo=UTC)
    fees = [(0, mar, 8000.0, "Recurring"), (3, feb, 8000.0, "Recurring"), (3, mar, 24000.0, "Recurring"),
            (5, mar, 8000.0, None)]  # fmt: skip
    bills = [{"start": day, "cost": amount, "sub_account_id": f"acct-{account}", "service_name": "Service 0",
              "charge_category": "Purchase", "charge_frequency": frequency} for account, day, amount, frequency in fees]  # fmt: skip
    store.replace_cost_lines("bills", start, start + timedelta(days=days), cost_lines(rows))
    store.replace_cost_lines("fees", start, start + timedelta(days=days), cost_lines(bills))


def _run_hourly_and_fees(tmp_path: Path, workers: int, shard_cells: int) -> list[tuple[Any, ...]]:
    from datetime import timedelta

    from spendwatch.config import parse_config
    from spendwatch.detect.runner import detect, settings_from_config
    from spendwatch.store import Store
    from tests.doubles.clock import FixedClock

    start, days = datetime(2026, 1, 20, tzinfo=UTC), 60
    clock = FixedClock(start + timedelta(days=days, hours=3))
    cfg = parse_config(
        "store: {path: s.duckdb}\nsources:\n  - {name: bills, type: focus, path: unused, settle_lag: 2h}\n"
        "monitors:\n"
        "  - {name: svc, dimensions: [sub_account_id, service_name], granularity: [daily],"
        " charge_categories: [Usage, Purchase]}\n"
        "  - {name: acct, dimensions: [sub_account_id], granularity: [hourly], time_zones: [America/New_York]}\n",
        tmp_path / "sw.yaml",
        environ={},
    )
    settings = settings_from_config(cfg)
    settings = type(settings)(**{**settings.__dict__, "workers": workers, "shard_cells": shard_cells})
    store = Store(cfg.store.path, clock=clock)
    _hourly_estate(store, start, days)
    detect(cfg.monitors, store, clock, settings)
    return store.query(
        "SELECT monitor, granularity, series_key, kind, status, first_seen, * EXCLUDE (created_at, updated_at) "
        "FROM anomalies ORDER BY id"
    )


def test_declared_fees_and_local_clocks_reach_every_shard_of_the_runner(tmp_path: Path) -> None:
    one = _run_hourly_and_fees(tmp_path / "one", workers=1, shard_cells=10**9)
    # hourly shards of 2 series over 2 processes; daily shards of 13: one with the fees, one without
    many = _run_hourly_and_fees(tmp_path / "many", workers=2, shard_cells=2 * 1345)
    assert one == many
    fee_day = datetime(2026, 3, 5, tzinfo=UTC)
    daily = {(json.loads(r[2])["sub_account_id"], r[5]) for r in one if r[1] == "daily" and r[3] != "drop"}
    assert ("acct-3", fee_day) in daily  # the declared fee three times its usual size
    assert ("acct-5", fee_day) in daily  # a first fee the bill does not call recurring alerts...
    assert ("acct-0", fee_day) not in daily  # ...the same one declared recurring is its own expectation
    assert any(r[1] == "hourly" and json.loads(r[2])["sub_account_id"] == "acct-1" for r in one)


@pytest.mark.parametrize("granularity", ["daily", "hourly"])
def test_row_blocks_inside_one_fit_decide_exactly_what_one_block_decides(
    granularity: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Detector.fit`` decides a large panel in blocks of rows (cache-sized): with rebases, declared
    fees and (hourly) a local clock, any block size gives the same bits as the panel in one block."""
    import spendwatch.detect.model as model

    if granularity == "daily":
        values, stamps = fleet(230, 150, seed=8)
        decide_from, params = 100, ModelParams.for_granularity("daily")
    else:
        n_steps = 24 * 41
        stamps = np.datetime64("2026-02-01T00", "h") + np.arange(n_steps).astype("timedelta64[h]")
        local_hour = (stamps - np.timedelta64(5, "h") + (stamps >= np.datetime64("2026-03-08T07", "h"))).astype(int)
        busy = ((local_hour % 24 >= 9) & (local_hour % 24 < 18)).astype(float)
        rng = np.random.default_rng(9)
        values = (
            np.exp(rng.uniform(1, 6, 40))[:, None] * (0.2 + busy) * np.exp(0.05 * rng.standard_normal((40, n_steps)))
        )
        values[rng.random(values.shape) < 0.002] *= 8
        stamps = stamps.astype("datetime64[s]")
        decide_from, params = n_steps - 24 * 5, ModelParams.for_granularity("hourly", time_zones=("America/New_York",))
    rng = np.random.default_rng(6)
    rebase = np.where(rng.random(len(values)) < 0.1, rng.integers(0, decide_from, len(values)), -1)
    declared = np.full(values.shape, np.nan)
    declared[5:9] = np.where(np.arange(values.shape[1]) % 30 == 4, 900.0, 0.0)
    values[5:9] += np.nan_to_num(declared[5:9])

    def fit() -> DetectionResult:
        return Detector(params).fit(values, stamps, decide_from=decide_from, rebase_at=rebase, declared=declared)

    monkeypatch.setattr(model, "ROW_BLOCK_CELLS", 10**12)
    whole = fit()
    assert whole.is_anomaly.any()
    for rows in (1, 7, 64):  # one series a block, uneven blocks, a short last block
        monkeypatch.setattr(model, "ROW_BLOCK_CELLS", rows * values.shape[1])
        assert_same(fit(), whole)
