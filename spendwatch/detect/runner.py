"""One detection pass over the store: monitors → series panels → model → incidents with culprits.

The pass holds the store only briefly: it reads the panels (shared lock), fits the model with no
lock held, reads what attribution needs (shared lock), then writes every incident change in one
transaction. Each run re-decides the last ``rescore`` steps of every series, so restated data is
re-scored and an incident a restatement removed is withdrawn. Only settled steps are decided: a
step is scored once every enabled source's ``settle_lag`` has passed since it ended.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from spendwatch.clock import Clock
from spendwatch.detect.attribution import Window, contributors, link_jobs
from spendwatch.detect.clocks import COMMON_ZONES
from spendwatch.detect.incidents import (
    ReconcileCounts,
    Segment,
    SeriesDecisions,
    SeverityThresholds,
    chart_points,
    figures,
    load_baselines,
    reconcile,
    segments,
)
from spendwatch.detect.model import ModelParams
from spendwatch.detect.monitors import MonitorConfig
from spendwatch.detect.panel import PanelShard, columns, stream_panel
from spendwatch.detect.parallel import SHARD_CELLS, Shard, ShardResult, available_cpus, fit_stream, shard_rows
from spendwatch.errors import Interrupted, UserError
from spendwatch.store import Store

if TYPE_CHECKING:
    from spendwatch.config import Config

log = logging.getLogger("spendwatch.detect")
Progress = Callable[[str], None]


@dataclass(frozen=True)
class DetectionSettings:
    """What the runner needs from the config (see ``DetectionConfig``)."""

    history: timedelta = timedelta(days=200)
    hourly_history: timedelta = timedelta(days=56)
    rescore_daily: int = 35
    rescore_hourly: int = 72
    incident_gap: int = 1
    cost_column: str = "effective_cost"
    settle_lag: timedelta = timedelta(hours=1)
    severity: SeverityThresholds = field(default_factory=SeverityThresholds)
    time_zone: str = "UTC"  # the daemon's zone: a local clock hourly series are also tried against
    workers: int = 1  # processes a monitor's series are sharded over (spendwatch.detect.parallel)
    shard_cells: int = SHARD_CELLS  # series × steps per shard: what bounds each process's memory


@dataclass
class MonitorRun:
    monitor: str
    granularity: str
    series: int = 0
    steps: int = 0
    newest: datetime | None = None
    anomalous_series: int = 0
    counts: ReconcileCounts = field(default_factory=ReconcileCounts)
    seconds: float = 0.0


@dataclass
class DetectionRun:
    monitors: list[MonitorRun] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def series_scored(self) -> int:
        return sum(m.series for m in self.monitors)

    @property
    def opened(self) -> int:
        return sum(m.counts.opened for m in self.monitors)


def settings_from_config(config: Config) -> DetectionSettings:
    detection = config.detection
    lags = [s.settle_lag for s in config.sources if s.enabled] or [timedelta(hours=1)]
    return DetectionSettings(
        history=detection.history,
        hourly_history=detection.hourly_history,
        rescore_daily=detection.rescore_daily,
        rescore_hourly=detection.rescore_hourly,
        incident_gap=detection.incident_gap,
        cost_column=detection.cost_column,
        settle_lag=max(lags),
        severity=SeverityThresholds(**detection.severity.model_dump()),
        time_zone=config.daemon.timezone,
        workers=detection.workers or available_cpus(),
    )


def run_detection(
    config: Config,
    store: Store,
    clock: Clock,
    *,
    monitors: Iterable[str] | None = None,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> DetectionRun:
    """Score every (or the named) monitor's series and reconcile incidents in the store.

    ``stop`` (the daemon is stopping) ends the run between monitors: each monitor's incidents are
    reconciled in their own transaction, so the ones done stay done and the next run does the rest.
    """
    wanted = set(monitors) if monitors is not None else None
    chosen = [m for m in config.monitors if wanted is None or m.name in wanted]
    if wanted is not None and len(chosen) != len(wanted):
        unknown = sorted(wanted - {m.name for m in chosen})
        raise UserError(
            f"no monitor named {', '.join(unknown)} (configured: {', '.join(m.name for m in config.monitors)})"
        )
    return detect(chosen, store, clock, settings_from_config(config), progress=progress, stop=stop)


def detect(
    monitors: list[MonitorConfig],
    store: Store,
    clock: Clock,
    settings: DetectionSettings,
    *,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> DetectionRun:
    began = time.monotonic()
    run = DetectionRun()
    run_id = store.start_run("detect")
    try:
        for monitor in monitors:
            for granularity in monitor.granularity:
                if stop is not None and stop.is_set():
                    store.finish_run(run_id, status="interrupted", rows=run.series_scored)
                    raise Interrupted(f"detection stopped after {len(run.monitors)} monitor run(s)")
                result = _detect_monitor(monitor, granularity, store, clock, settings)
                run.monitors.append(result)
                if progress is not None:
                    progress(_describe(result))
        _refresh_charges(store, clock.now() - timedelta(days=settings.rescore_daily + 1))
    except Interrupted:
        raise
    except Exception as exc:
        store.finish_run(run_id, status="failed", error=f"{type(exc).__name__}: {exc}")
        raise
    run.seconds = time.monotonic() - began
    store.finish_run(
        run_id,
        status="ok",
        rows=run.series_scored,
        detail={"series": run.series_scored, "opened": run.opened, "monitors": len(run.monitors)},
    )
    return run


def _describe(result: MonitorRun) -> str:
    newest = f" up to {result.newest:%Y-%m-%d %H:%M}" if result.newest else " (no settled data)"
    c = result.counts
    return (
        f"{result.monitor} ({result.granularity}): {result.series} series{newest}; "
        f"{c.opened} new, {c.updated} updated, {c.resolved} resolved, {c.withdrawn} withdrawn incident(s), "
        f"{c.drops} drop(s), {result.seconds:.1f}s"
    )


def _step(granularity: str) -> timedelta:
    return timedelta(hours=1) if granularity == "hourly" else timedelta(days=1)


def _floor(moment: datetime, step: timedelta) -> datetime:
    moment = moment.astimezone(UTC)
    if step == timedelta(hours=1):
        return moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def data_before(store: Store, moment: datetime) -> bool:
    """Whether the store holds cost lines that start before ``moment`` (the history window's first step):
    then a series running from the window's first column may be older than the window."""
    rows = store.query("SELECT EXISTS (SELECT 1 FROM cost_lines WHERE charge_period_start < ?)", [moment])
    return bool(rows and rows[0][0])


def newest_settled_step(store: Store, now: datetime, granularity: str, settle_lag: timedelta) -> datetime | None:
    """The start of the newest step that is complete in the data and past every source's settle lag."""
    step = _step(granularity)
    rows = store.query("SELECT max(charge_period_end) FROM cost_lines")
    data_end = rows[0][0] if rows and rows[0][0] is not None else None
    if data_end is None:
        return None
    end = min(_floor(now - settle_lag, step), _floor(data_end, step))
    return end - step


def _detect_monitor(
    monitor: MonitorConfig, granularity: str, store: Store, clock: Clock, settings: DetectionSettings
) -> MonitorRun:
    began = time.monotonic()
    result = MonitorRun(monitor.name, granularity)
    now = clock.now()
    step = _step(granularity)
    newest = newest_settled_step(store, now, granularity, settings.settle_lag)
    if newest is None:
        return result
    history = settings.hourly_history if granularity == "hourly" else settings.history
    first = _floor(newest - history, step)
    timestamps = columns(first, newest + step, granularity)
    rescore = settings.rescore_hourly if granularity == "hourly" else settings.rescore_daily
    decide_from = max(0, len(timestamps) - rescore)
    window_start = timestamps[decide_from] if decide_from < len(timestamps) else newest
    watched = _series_with_incidents(
        store, monitor.name, granularity, window_start - (settings.incident_gap + 1) * step
    )
    baselines = load_baselines(store, monitor.name, granularity)
    params = ModelParams.for_granularity(
        granularity,  # type: ignore[arg-type]
        sensitivity=monitor.sensitivity,
        min_impact_abs=monitor.min_impact,
        min_impact_pct=monitor.min_impact_pct,
        time_zones=candidate_zones(monitor, settings),  # travel to the workers inside params
        history_cut=data_before(store, first),
    )
    rows = shard_rows(len(timestamps), settings.shard_cells)
    series: list[SeriesDecisions] = []
    with stream_panel(store, monitor, granularity, first, newest + step, settings.cost_column, rows=rows) as panel:
        result.newest, result.series, result.steps = newest, panel.series, len(timestamps)
        if not panel.series:
            result.seconds = time.monotonic() - began
            return result
        if panel.series > monitor.max_series:
            raise UserError(
                f"monitor {monitor.name} has {panel.series} series, more than its max_series "
                f"({monitor.max_series}); narrow its dimensions or filters, or raise max_series"
            )
        shards = ((part, _shard(part, watched, baselines, first, step)) for part in panel)
        decided = fit_stream(params, _as_datetime64(timestamps), shards, decide_from=decide_from,
                             workers=settings.workers, flagged_only=True)  # fmt: skip
        for part, done in decided:
            series += _decisions(monitor.name, granularity, timestamps, part, done, decide_from)
    found = _segments(series, watched, settings, store, monitor, now, step)
    result.anomalous_series = sum(1 for _, segs in found if any(s.kind != "drop" for s, _, _ in segs))
    with store.transaction() as con:
        for decisions, segs in found:
            reconcile(
                con, decisions, segs, window_start=window_start, newest=newest, gap=settings.incident_gap,
                severity=settings.severity, now=now, counts=result.counts,
            )  # fmt: skip
    result.seconds = time.monotonic() - began
    return result


def candidate_zones(monitor: MonitorConfig, settings: DetectionSettings) -> tuple[str, ...]:
    """The local clocks an hourly series is tried against: the monitor's zones, the daemon's, then
    the common business zones (each once, in that order; ties between zones go to the first)."""
    return tuple(dict.fromkeys([*monitor.time_zones, settings.time_zone, *COMMON_ZONES]))


def _shard(
    part: PanelShard, watched: set[str], baselines: dict[str, datetime], start: datetime, step: timedelta
) -> Shard:
    """What a worker needs of a panel shard: costs, declared recurring charges, rebase columns, and
    which series must come back."""
    keep = np.fromiter((key in watched for key in part.keys), dtype=bool, count=len(part.keys))
    rebase = None
    if baselines:
        rebase = np.full(len(part.keys), -1, dtype=np.int64)
        for i, key in enumerate(part.keys):
            at = baselines.get(key)
            if at is not None:
                rebase[i] = max(0, int((at - start) / step))
    return Shard(part.values, rebase, keep, part.declared)


def _as_datetime64(timestamps: list[datetime]) -> np.ndarray:
    return np.array([t.replace(tzinfo=None) for t in timestamps], dtype="datetime64[s]")


def _decisions(
    monitor: str, granularity: str, timestamps: list[datetime], part: PanelShard, done: ShardResult, start: int
) -> list[SeriesDecisions]:
    decided = done.result
    return [
        SeriesDecisions(
            monitor=monitor,
            granularity=granularity,
            key=part.keys[row],
            dimensions=part.dimensions[row],
            currency=part.currencies[row],
            timestamps=timestamps[start:],
            actual=part.values[row, start:].copy(),  # a copy: the shard's block is freed once decided
            expected=decided.expected[i],
            lower=decided.lower[i],
            upper=decided.upper[i],
            score=decided.score[i],
            is_anomaly=decided.is_anomaly[i],
            is_drop=decided.is_drop[i],
            kind=decided.kind[i],
        )
        for i, row in enumerate(int(r) for r in done.rows)
    ]


def _series_with_incidents(store: Store, monitor: str, granularity: str, since: datetime) -> set[str]:
    rows = store.query(
        "SELECT DISTINCT series_key FROM anomalies WHERE monitor = ? AND granularity = ? AND last_seen >= ? "
        "AND status <> 'withdrawn'",
        [monitor, granularity, since],
    )
    return {str(r[0]) for r in rows}


def _segments(
    series: list[SeriesDecisions],
    watched: set[str],
    settings: DetectionSettings,
    store: Store,
    monitor: MonitorConfig,
    now: datetime,
    step: timedelta,
) -> list[tuple[SeriesDecisions, list[tuple[Segment, Any, Any]]]]:
    context = 28 if step == timedelta(days=1) else 48
    out = []
    with store.read() as con:
        for decisions in series:
            found = segments(decisions.is_anomaly, decisions.kind, gap=settings.incident_gap)
            found += segments(decisions.is_drop, decisions.kind, gap=settings.incident_gap, drop=True)
            if not found and decisions.key not in watched:
                continue
            entries = []
            for segment in found:
                numbers = figures(decisions, segment)
                if segment.kind != "drop":
                    window = Window(numbers.first_seen, numbers.last_seen, step)
                    segment.contributors = contributors(
                        con, monitor, decisions.dimensions, decisions.currency, window,
                        cost_column=settings.cost_column,
                    )  # fmt: skip
                    segment.jobs = link_jobs(con, decisions.dimensions, window, numbers.impact,
                                             segment.contributors, now=now)  # fmt: skip
                entries.append((segment, numbers, chart_points(decisions, segment, context)))
            out.append((decisions, entries))
    return out


def _refresh_charges(store: Store, since: datetime) -> None:
    """Fees, credits, taxes and purchases per day: reported in the digest, never scored."""
    day = since.replace(hour=0, minute=0, second=0, microsecond=0)
    with store.transaction() as con:
        con.execute("DELETE FROM charges_seen WHERE day >= CAST(? AS DATE)", [day])
        con.execute(
            "INSERT INTO charges_seen SELECT CAST(date_trunc('day', charge_period_start) AS DATE), provider, "
            "sub_account_id, service_name, charge_category, billing_currency, sum(billed_cost) FROM cost_lines "
            "WHERE charge_category <> 'Usage' AND charge_period_start >= ? GROUP BY ALL",
            [day],
        )
