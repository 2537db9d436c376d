"""Spend as Prometheus gauges, beside the operational metrics: what a Grafana dashboard of cost needs.

``SpendCollector`` is a prometheus_client custom collector over the store (never the billing APIs);
give it the registry to join. Figures are recomputed at most every ``refresh`` (bills change hourly;
Prometheus scrapes every few seconds), so a scrape costs a cached answer, not a scan of cost lines.

Metrics (gauges; money in the ``currency`` label's unit — different currencies are never summed):

* ``spendwatch_spend_yesterday{provider,account,currency}`` — yesterday's cost (``daemon.timezone``
  days, every charge category: the bill), in ``detection.cost_column`` (effective cost by default);
* ``spendwatch_spend_month_to_date{provider,account,currency}`` — this month's, up to now;
* ``spendwatch_incidents_open_excess{severity,currency}`` — the summed excess of open incidents;
* ``spendwatch_guard_burn_rate_per_hour{platform,currency}``, ``spendwatch_guard_running_jobs{platform}``
  — what the guard's running jobs burn now (its last poll);
* ``spendwatch_budget_amount|spent|forecast|forecast_lower|forecast_upper{budget,currency}`` and
  ``spendwatch_budget_state{budget,state}`` — each configured budget against its month-end forecast (as
  of the last complete day in ``daemon.timezone``, as the digest shows it);
* ``spendwatch_spend_refreshed_timestamp_seconds`` — when these figures were computed;
* ``spendwatch_spend_folded_values{label}`` — how many values went into ``other`` (or, for
  ``currency``, were left out): raise the ``top_*`` settings when it matters.

Cardinality is bounded whatever the data holds: ``top_providers`` providers, ``top_accounts``
accounts per provider and currency (by month-to-date spend), ``top_platforms`` platforms and
``max_currencies`` currencies keep their own label; the rest are summed under ``other``. Label values
come from billing data, so they are cleaned (``terminal.clean``: no control characters) and cut at
100 characters.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from spendwatch.clock import Clock
from spendwatch.store import Connection, Store
from spendwatch.store.records import SEVERITY_ORDER
from spendwatch.terminal import clean

if TYPE_CHECKING:
    from spendwatch.config import Config
    from spendwatch.daemon.config import SpendMetricsConfig

log = logging.getLogger("spendwatch.metrics")
OTHER = "other"
MAX_LABEL = 100


def label(value: object) -> str:
    """A label value from data: cleaned for terminals, cut, never empty."""
    text = clean(str(value)) if value not in (None, "") else "unknown"
    return text[:MAX_LABEL]


def local_bounds(now: datetime, zone: str) -> tuple[datetime, datetime, datetime]:
    """(start of yesterday, start of today, start of this month) in ``zone``, as UTC instants.

    Built from calendar dates, not by subtracting 24 hours: across a DST change a day is 23 or 25 hours.
    """
    tz = ZoneInfo(zone)
    day = now.astimezone(tz).date()

    def midnight(value: date) -> datetime:
        return datetime.combine(value, time(0), tzinfo=tz).astimezone(UTC)

    return midnight(day - timedelta(days=1)), midnight(day), midnight(day.replace(day=1))


def top(totals: dict[str, float], n: int) -> set[str]:
    """The ``n`` keys with the largest absolute totals (ties by name, so the choice is stable)."""
    ranked = sorted(totals.items(), key=lambda item: (-abs(item[1]), item[0]))
    return {key for key, _ in ranked[:n]}


class SpendCollector(Collector):
    def __init__(
        self, config: Config, store: Store, clock: Clock | None = None, *, registry: CollectorRegistry | None = None
    ) -> None:
        self.config = config
        self.settings: SpendMetricsConfig = config.daemon.health.spend
        self.store = store
        self.clock = clock or store.clock
        self._lock = threading.Lock()
        self._cached: tuple[datetime, list[Metric]] | None = None
        if registry is not None:
            registry.register(self)

    def describe(self) -> list[Metric]:
        return []  # read at scrape time

    def collect(self) -> Iterator[Metric]:
        if not self.settings.enabled:
            return
        now = self.clock.now()
        with self._lock:  # concurrent scrapes share one computation
            cached = self._cached
            if cached is None or now - cached[0] >= self.settings.refresh or now < cached[0]:
                try:
                    families = self._families(now)
                except Exception as exc:  # a busy or broken store: spendwatch_up says so; serve nothing stale
                    log.warning("spend metrics: cannot read the store: %s", exc)
                    self._cached = None
                    return
                cached = self._cached = (now, families)
        yield from cached[1]

    def _families(self, now: datetime) -> list[Metric]:
        folded: dict[str, int] = defaultdict(int)
        with self.store.read() as con:
            families = [*self._spend(con, now, folded), *self._incidents(con, folded)]
        families += self._guard(now, folded)  # the guard reads the store itself: after this read closed
        families += self._budgets(now)  # so does the forecast
        return families + list(self._bookkeeping(now, folded))

    def _bookkeeping(self, now: datetime, folded: dict[str, int]) -> Iterator[Metric]:
        refreshed = GaugeMetricFamily(
            "spendwatch_spend_refreshed_timestamp_seconds", "when the spend figures were computed"
        )
        refreshed.add_metric([], now.timestamp())
        yield refreshed
        counts = GaugeMetricFamily(
            "spendwatch_spend_folded_values",
            "distinct values summed into 'other' (currencies: left out), per label",
            labels=["label"],
        )
        for name in ("provider", "account", "platform", "currency"):
            counts.add_metric([name], float(folded[name]))
        yield counts

    # -- spend ---------------------------------------------------------------------------------------

    def _spend(self, con: Connection, now: datetime, folded: dict[str, int]) -> Iterator[Metric]:
        yesterday_start, today_start, month_start = local_bounds(now, self.config.daemon.timezone)
        cost = self.config.detection.cost_column  # a validated literal column name
        rows = con.execute(
            f"SELECT provider, coalesce(sub_account_id, billing_account_id), billing_currency, "
            f"sum({cost}) FILTER (WHERE charge_period_start >= ? AND charge_period_start < ?), "
            f"sum({cost}) FILTER (WHERE charge_period_start >= ? AND charge_period_start < ?) "
            "FROM cost_lines WHERE charge_period_start >= ? AND charge_period_start < ? GROUP BY ALL",
            [yesterday_start, today_start, month_start, now, min(yesterday_start, month_start), now],
        ).fetchall()
        currencies = self._currencies({r[2]: abs(r[4] or 0.0) + abs(r[3] or 0.0) for r in rows}, folded)
        rows = [r for r in rows if r[2] in currencies]
        provider_totals: dict[str, float] = defaultdict(float)
        for provider, _, _, day, month in rows:
            provider_totals[provider] += abs(month or 0.0) + abs(day or 0.0)
        providers = top(provider_totals, self.settings.top_providers)
        folded["provider"] += len(provider_totals) - len(providers)
        # Accounts are ranked within each (provider, currency) by month-to-date spend.
        groups: dict[tuple[str, str], dict[str, tuple[float, float]]] = defaultdict(dict)
        for provider, account, currency, day, month in rows:
            group = groups[(provider if provider in providers else OTHER, currency)]
            key = label(account)
            old = group.get(key, (0.0, 0.0))
            group[key] = (old[0] + (day or 0.0), old[1] + (month or 0.0))
        yesterday = GaugeMetricFamily(
            "spendwatch_spend_yesterday", "cost of yesterday (daemon.timezone), all charges", labels=_SPEND_LABELS
        )
        month_to_date = GaugeMetricFamily(
            "spendwatch_spend_month_to_date", "cost since the 1st of this month, all charges", labels=_SPEND_LABELS
        )
        for (provider, currency), accounts in sorted(groups.items()):
            kept = top({k: v[1] or v[0] for k, v in accounts.items()}, self.settings.top_accounts)
            folded["account"] += len(accounts) - len(kept)
            sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
            for account, (day, month) in accounts.items():
                name = account if account in kept else OTHER
                sums[name][0] += day
                sums[name][1] += month
            for account, (day, month) in sorted(sums.items()):
                labels = [label(provider), account, label(currency)]
                yesterday.add_metric(labels, day)
                month_to_date.add_metric(labels, month)
        yield yesterday
        yield month_to_date

    def _currencies(self, totals: dict[str, float], folded: dict[str, int]) -> set[str]:
        kept = top(totals, self.settings.max_currencies)
        folded["currency"] += len(totals) - len(kept)
        return kept

    # -- incidents and the guard -----------------------------------------------------------------------

    def _incidents(self, con: Connection, folded: dict[str, int]) -> Iterator[Metric]:
        rows = con.execute(
            "SELECT severity, billing_currency, sum(impact) FROM anomalies "
            "WHERE status IN ('open', 'ongoing') AND kind <> 'drop' GROUP BY ALL"
        ).fetchall()
        currencies = self._currencies({r[1]: abs(r[2] or 0.0) for r in rows}, folded)
        excess = GaugeMetricFamily(
            "spendwatch_incidents_open_excess",
            "summed excess over expected of open or ongoing incidents",
            labels=["severity", "currency"],
        )
        for severity, currency, impact in sorted(rows, key=lambda r: (str(r[0]), str(r[1]))):
            if severity in SEVERITY_ORDER and currency in currencies:
                excess.add_metric([severity, label(currency)], float(impact or 0.0))
        yield excess

    def _guard(self, now: datetime, folded: dict[str, int]) -> Iterator[Metric]:
        burn = GaugeMetricFamily(
            "spendwatch_guard_burn_rate_per_hour",
            "what the guard's running jobs burn per hour now (its last poll)",
            labels=["platform", "currency"],
        )
        running = GaugeMetricFamily(
            "spendwatch_guard_running_jobs", "running jobs the guard saw at its last poll", labels=["platform"]
        )
        from spendwatch.guard.engine import guard_interval

        if guard_interval(self.config) is not None:  # the daemon runs the guard
            from spendwatch.guard.status import guard_status

            jobs = guard_status(self.config, self.store, _At(now)).jobs
            rates: dict[tuple[str, str], float] = defaultdict(float)
            counts: dict[str, int] = defaultdict(int)
            for job in jobs:
                rates[(job.platform, job.currency)] += job.burn_rate or 0.0
                counts[job.platform] += 1
            platforms = top({p: float(c) for p, c in counts.items()}, self.settings.top_platforms)
            folded["platform"] += len(counts) - len(platforms)
            currencies = self._currencies(_by_currency(rates.items()), folded)
            merged: dict[tuple[str, str], float] = defaultdict(float)
            for (platform, currency), rate in rates.items():
                if currency in currencies:
                    merged[(platform if platform in platforms else OTHER, currency)] += rate
            merged_counts: dict[str, int] = defaultdict(int)
            for platform, count in counts.items():
                merged_counts[platform if platform in platforms else OTHER] += count
            for (platform, currency), rate in sorted(merged.items()):
                burn.add_metric([label(platform), label(currency)], rate)
            for platform, count in sorted(merged_counts.items()):
                running.add_metric([label(platform)], float(count))
        yield burn
        yield running

    # -- budgets ------------------------------------------------------------------------------------------

    def _budgets(self, now: datetime) -> Iterator[Metric]:
        """Each configured budget against its month-end forecast, as of the last complete local day (what
        the digest shows). Budgets come from the config, so their number is the operator's, not the data's."""
        families = {
            name: GaugeMetricFamily(f"spendwatch_budget_{name}", help_text, labels=["budget", "currency"])
            for name, help_text in (
                ("amount", "the monthly budget"),
                ("spent", "spent this month in the budget's scope, up to the last complete day"),
                ("forecast", "where the month ends in the budget's scope (the forecast's central value)"),
                ("forecast_lower", "the 80% interval's lower end of the month-end forecast"),
                ("forecast_upper", "the 80% interval's upper end of the month-end forecast"),
            )
        }
        state = GaugeMetricFamily(
            "spendwatch_budget_state",
            "1 for the budget's state (ok, at-risk, will-exceed, over), 0 for the others",
            labels=["budget", "state"],
        )
        if self.config.budgets:
            from spendwatch.notify.budgets import BUDGET_STATES, budget_statuses

            as_of = now.astimezone(ZoneInfo(self.config.daemon.timezone)).date() - timedelta(days=1)
            statuses = budget_statuses(
                self.config.budgets, self.config.notify, self.store, as_of, column=self.config.detection.cost_column
            )
            for status in statuses:
                labels = [label(status.budget.name), label(status.budget.currency)]
                forecast = status.forecast
                for name, value in (
                    ("amount", status.budget.amount),
                    ("spent", forecast.to_date),
                    ("forecast", forecast.forecast),
                    ("forecast_lower", forecast.lower),
                    ("forecast_upper", forecast.upper),
                ):
                    families[name].add_metric(labels, float(value))
                for each in BUDGET_STATES:
                    state.add_metric([labels[0], each], 1.0 if status.state == each else 0.0)
        yield from families.values()
        yield state


_SPEND_LABELS = ["provider", "account", "currency"]


def _by_currency(items: Iterable[tuple[tuple[str, str], float]]) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for (_, currency), value in items:
        totals[currency] += abs(value)
    return totals


class _At:
    """A clock stopped at the scrape's instant: every figure of one refresh shares it."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at
