"""Prometheus metrics read from the local store on each scrape — never from the billing APIs.

``StoreCollector`` is a prometheus_client custom collector; give it the registry to join
(``StoreCollector(config, store, registry=registry)``). Label values are bounded: job and source
labels come from the config (a run of a job the config does not name is not exported), severities
and action states from fixed lists, counter names from the collectors' code (at most
``MAX_COUNTERS_PER_SOURCE`` per source).

Metrics (all gauges unless ``_total``):

* ``spendwatch_up`` — 1 when the store answered this scrape;
* ``spendwatch_job_last_success_timestamp_seconds{job}``, ``spendwatch_job_last_run_timestamp_seconds{job,status}``,
  ``spendwatch_job_consecutive_failures{job}``;
* ``spendwatch_source_rows_collected{source}`` (last good run), ``spendwatch_source_cost_lines{source}``,
  ``spendwatch_source_data_end_timestamp_seconds{source}``, ``spendwatch_source_counter_total{source,counter}``
  (API calls, bytes billed … summed over the runs kept);
* ``spendwatch_series_scored`` (last detection run);
* ``spendwatch_incidents_open{severity}``, ``spendwatch_actions{state}``;
* ``spendwatch_digest_last_sent_timestamp_seconds``, ``spendwatch_digest_last_day_status{status}``;
* ``spendwatch_alerts_sent_total``, ``spendwatch_alert_failures{given_up}``.

Spend itself (cost yesterday and month to date, incident excess, budgets, guard burn) is in
``spend_metrics``; ``deploy/grafana/spendwatch.json`` and ``deploy/kubernetes/prometheusrule.yaml`` use both.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from spendwatch.store import Connection, Store
from spendwatch.store.records import SEVERITY_ORDER

if TYPE_CHECKING:
    from spendwatch.config import Config

log = logging.getLogger("spendwatch.metrics")
ACTION_STATES = ("planned", "awaiting-approval", "running", "done", "failed", "undone", "expired", "undoing")
DIGEST_STATUSES = ("sending", "committing", "sent", "unconfirmed", "failed", "superseded")
RUN_STATUSES = ("ok", "partial", "failed", "interrupted", "running")
DAEMON_JOBS = ("detect", "killswitch", "alerts", "guard", "digest", "housekeeping", "snapshot")
MAX_COUNTERS_PER_SOURCE = 20


def _ts(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


class StoreCollector(Collector):
    def __init__(self, config: Config, store: Store, *, registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.store = store
        self.sources = tuple(s.name for s in config.sources)
        self.jobs = (*(f"collect:{s}" for s in self.sources), *DAEMON_JOBS)
        if registry is not None:
            registry.register(self)

    def describe(self) -> list[Metric]:
        return []  # metrics are read at scrape time; no duplicate-name check needed up front

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("spendwatch_up", "1 when the store answered this scrape")
        try:
            with self.store.read() as con:
                families = list(self._families(con))
        except Exception as exc:  # a busy or broken store must not break the scrape
            log.warning("metrics: cannot read the store: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _families(self, con: Connection) -> Iterator[Metric]:
        yield from self._jobs(con)
        yield from self._sources(con)
        yield from self._detection(con)
        yield from self._actions(con)
        yield from self._delivery(con)

    def _jobs(self, con: Connection) -> Iterator[Metric]:
        last_ok = GaugeMetricFamily(
            "spendwatch_job_last_success_timestamp_seconds", "end of the last successful run", labels=["job"]
        )
        last_run = GaugeMetricFamily(
            "spendwatch_job_last_run_timestamp_seconds",
            "start of the last run, by its status",
            labels=["job", "status"],
        )
        streak = GaugeMetricFamily(
            "spendwatch_job_consecutive_failures", "failed runs since the last success", labels=["job"]
        )
        rows = con.execute(
            "SELECT job, max(finished_at) FILTER (WHERE status IN ('ok', 'partial')), "
            "arg_max(status, started_at), max(started_at), "
            "count(*) FILTER (WHERE status = 'failed' AND started_at > coalesce("
            "  (SELECT max(r2.started_at) FROM runs r2 WHERE r2.job = runs.job AND r2.status IN ('ok', 'partial')),"
            "  TIMESTAMPTZ '1970-01-01')) "
            "FROM runs GROUP BY job"
        ).fetchall()
        wanted = set(self.jobs)
        for job, ok_at, status, started, failures in rows:
            if job not in wanted:
                continue
            if ok_at is not None:
                last_ok.add_metric([job], ok_at.timestamp())
            if status in RUN_STATUSES:
                last_run.add_metric([job, status], started.timestamp())
            streak.add_metric([job], float(failures))
        yield from (last_ok, last_run, streak)

    def _sources(self, con: Connection) -> Iterator[Metric]:
        collected = GaugeMetricFamily(
            "spendwatch_source_rows_collected",
            "cost lines + job records of the last good collection",
            labels=["source"],
        )
        lines = GaugeMetricFamily("spendwatch_source_cost_lines", "cost lines in the store", labels=["source"])
        data_end = GaugeMetricFamily(
            "spendwatch_source_data_end_timestamp_seconds", "end of the newest charge period stored", labels=["source"]
        )
        counters = CounterMetricFamily(
            "spendwatch_source_counter",
            "what collectors report: API calls, bytes billed …",
            labels=["source", "counter"],
        )
        wanted = set(self.sources)
        for source, count in con.execute("SELECT source, count(*) FROM cost_lines GROUP BY source").fetchall():
            if source in wanted:
                lines.add_metric([source], float(count))
        for source, end in con.execute("SELECT source, max(data_end) FROM loads GROUP BY source").fetchall():
            if source in wanted and end is not None:
                data_end.add_metric([source], end.timestamp())
        runs = con.execute(
            "SELECT job, row_count, detail, status, started_at FROM runs WHERE job LIKE 'collect:%' "
            "AND status IN ('ok', 'partial', 'failed', 'interrupted') ORDER BY started_at"
        ).fetchall()
        totals: dict[str, dict[str, float]] = {}
        last_rows: dict[str, float] = {}
        for job, row_count, detail, status, _ in runs:
            source = job.removeprefix("collect:")
            if source not in wanted:
                continue
            if status in ("ok", "partial"):
                last_rows[source] = float(row_count or 0)
            for name, value in _numeric_counters(detail).items():
                bucket = totals.setdefault(source, {})
                if name in bucket or len(bucket) < MAX_COUNTERS_PER_SOURCE:
                    bucket[name] = bucket.get(name, 0.0) + value
        for source, rows in last_rows.items():
            collected.add_metric([source], rows)
        for source, bucket in totals.items():
            for name, value in sorted(bucket.items()):
                counters.add_metric([source, name], value)
        yield from (collected, lines, data_end, counters)

    def _detection(self, con: Connection) -> Iterator[Metric]:
        scored = GaugeMetricFamily("spendwatch_series_scored", "series scored by the last detection run")
        row = con.execute(
            "SELECT row_count FROM runs WHERE job = 'detect' AND status = 'ok' ORDER BY started_at DESC LIMIT 1"
        ).fetchone()
        if row is not None:
            scored.add_metric([], float(row[0] or 0))
        yield scored
        incidents = GaugeMetricFamily("spendwatch_incidents_open", "open or ongoing incidents", labels=["severity"])
        counts = dict(
            con.execute(
                "SELECT severity, count(*) FROM anomalies WHERE status IN ('open', 'ongoing') GROUP BY severity"
            ).fetchall()
        )
        for severity in SEVERITY_ORDER:
            incidents.add_metric([severity], float(counts.get(severity, 0)))
        yield incidents

    def _actions(self, con: Connection) -> Iterator[Metric]:
        actions = GaugeMetricFamily("spendwatch_actions", "kill-switch actions by state", labels=["state"])
        counts = dict(con.execute("SELECT state, count(*) FROM actions GROUP BY state").fetchall())
        for state in ACTION_STATES:
            actions.add_metric([state], float(counts.get(state, 0)))
        yield actions

    def _delivery(self, con: Connection) -> Iterator[Metric]:
        sent_at = GaugeMetricFamily("spendwatch_digest_last_sent_timestamp_seconds", "when the last digest went out")
        row = con.execute("SELECT max(sent_at) FROM digests WHERE status IN ('sent', 'unconfirmed')").fetchone()
        if row is not None and row[0] is not None:
            sent_at.add_metric([], row[0].timestamp())
        yield sent_at
        latest = GaugeMetricFamily(
            "spendwatch_digest_last_day_status", "1 for the status of the newest digest day", labels=["status"]
        )
        newest = con.execute("SELECT status FROM digests ORDER BY day DESC LIMIT 1").fetchone()
        for status in DIGEST_STATUSES:
            latest.add_metric([status], 1.0 if newest is not None and newest[0] == status else 0.0)
        yield latest
        alerts = CounterMetricFamily("spendwatch_alerts_sent", "immediate alerts delivered (per channel)")
        count = con.execute("SELECT count(*) FROM alerts_sent").fetchone()
        alerts.add_metric([], float(count[0] if count else 0))
        yield alerts
        failures = GaugeMetricFamily("spendwatch_alert_failures", "alert deliveries failing now", labels=["given_up"])
        rows = dict(con.execute("SELECT given_up, count(*) FROM alert_failures GROUP BY given_up").fetchall())
        for flag in (False, True):
            failures.add_metric([str(flag).lower()], float(rows.get(flag, 0)))
        yield failures


def _numeric_counters(detail: Any) -> dict[str, float]:
    try:
        data = json.loads(detail or "{}")
    except ValueError:
        return {}
    skip = {"periods", "jobs", "problems"}
    return {
        str(k): float(v)
        for k, v in data.items()
        if k not in skip and isinstance(v, int | float) and not isinstance(v, bool)
    }


def store_registry(config: Config, store: Store) -> CollectorRegistry:
    """A registry with the store collector, the spend collector (``spend_metrics``) and the process collector."""
    from prometheus_client import ProcessCollector

    from spendwatch.daemon.spend_metrics import SpendCollector

    registry = CollectorRegistry(auto_describe=False)
    StoreCollector(config, store, registry=registry)
    SpendCollector(config, store, registry=registry)
    ProcessCollector(registry=registry)
    return registry
