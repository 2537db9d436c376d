"""Cost so far, projected cost and burn rate of running jobs — and how each figure was estimated.

The listers (``collectors.aws.jobs.list_running``, ``collectors.gcp.jobs.list_running``) price what
their list calls show. The guard refines what they cannot see from a row alone:

* **BigQuery, on demand** — a query bills its bytes when it finishes, so the listers report the
  dry-run estimate as the cost. The guard reads the job's own statistics (captured from the same
  ``jobs.list`` page, or from ``jobs.get`` for the few near a cap): bytes processed so far
  (``totalBytesProcessed`` while it grows, else the estimate × the share of work units completed on
  the query timeline) × $/TiB is the cost so far; the projection is the dry-run estimate, never
  more than ``maximumBytesBilled`` (a query past that fails, so it cannot bill more).
* **BigQuery, editions** — slot-ms so far × the slot-hour price; the projection runs the current
  slot rate to the job's ``jobTimeoutMs`` or BigQuery's 6 h limit.
* **Athena** — bytes scanned so far × $/TB; projected at the current scan rate until Athena's DML
  timeout, never above the workgroup's ``BytesScannedCutoffPerQuery``.
* **Compute jobs** (SageMaker, EMR, Glue, Batch, Vertex, Dataproc) — instance type × count ×
  elapsed, as the listers compute it; projected to the job's own limit when it has one.
* **Kubernetes workloads** — each live pod's share of its node's price × the time since it started
  (``collectors.k8s.workloads``); the lister knows the rate now (the same shares per hour), and says so.

Burn rate ($/hour now): what the lister measured now when it can (``burn_rate`` in its record:
Kubernetes), else the change in cost since the previous poll over the time between them, else the
cost so far over the run time. Per user and per project it is the sum over their running jobs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from spendwatch.collectors.gcp.prices import HOUR_MS, TIB, PriceTable

QUERY_TIME_LIMIT = timedelta(hours=6)
# Previous observations older than this are too far apart to give a rate "now".
RATE_WINDOW = timedelta(minutes=30)


@dataclass(frozen=True)
class Observation:
    """A job's cost at one poll (for the burn rate at the next)."""

    at: datetime
    cost: float


@dataclass(frozen=True)
class Estimate:
    """One running job as the guard sees it at one poll."""

    source: str
    record: Mapping[str, Any]  # JOB_SCHEMA columns (labels as a dict), refined
    cost: float | None  # so far
    projected: float | None  # at completion / at its limit
    burn_rate: float | None  # currency per hour, now
    burn_method: str
    runtime: timedelta | None
    currency: str
    scope: str

    @property
    def key(self) -> str:
        return job_key(self.record)

    @property
    def platform(self) -> str:
        return str(self.record["platform"])

    @property
    def user(self) -> str | None:
        value = self.record.get("user") or self.record.get("owner")
        return str(value) if value else None

    @property
    def account(self) -> str | None:
        value = self.record.get("sub_account_id")
        return str(value) if value else None

    @property
    def method(self) -> str:
        return str(self.record.get("cost_method") or "unpriced")


def job_key(record: Mapping[str, Any]) -> str:
    return f"{record['platform']}:{record['job_id']}"


def scope_of(provider: str, platform: str, region: str | None, account: str | None, job_id: str | None = None) -> str:
    """What one listing covers: an AWS region, a GCP project, a Kubernetes cluster (a failed listing
    leaves its jobs alone)."""
    if platform == "kubernetes":
        return k8s_scope(str(job_id or "").removeprefix("k8s://").split("/", 1)[0] or "-")
    if provider == "aws":
        return f"aws:{platform}:{region or '-'}"
    return f"gcp:{platform}:{account or '-'}"


def k8s_scope(cluster: str) -> str:
    return f"k8s:kubernetes:{cluster}"


def labels_of(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    return {str(k): str(v) for k, v in value}


def burn_rate(
    cost: float | None, previous: Observation | None, start: datetime | None, now: datetime
) -> tuple[float | None, str]:
    """(currency per hour now, how it was measured)."""
    if cost is None:
        return None, "no cost yet"
    if previous is not None and timedelta(0) < now - previous.at <= RATE_WINDOW and cost >= previous.cost:
        hours = (now - previous.at).total_seconds() / 3600.0
        return (cost - previous.cost) / hours, f"change over the last {_short(now - previous.at)}"
    if start is not None and now > start:
        hours = max((now - start).total_seconds() / 3600.0, 1.0 / 60.0)
        return cost / hours, "average since it started"
    return None, "no start time"


def _short(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def estimate(
    source: str,
    record: Mapping[str, Any],
    *,
    now: datetime,
    previous: Observation | None,
) -> Estimate:
    """An ``Estimate`` from a (refined) job record."""
    cost = _float(record.get("estimated_cost"))
    projected = _float(record.get("projected_cost"))
    if projected is not None and cost is not None:
        projected = max(projected, cost)
    start = record.get("start_time")
    rate, how = burn_rate(cost, previous, start, now)
    if record.get("burn_rate") is not None:
        rate, how = float(record["burn_rate"]), str(record.get("burn_method") or "measured by the lister now")
    runtime = now - start if isinstance(start, datetime) and now >= start else None
    return Estimate(
        source=source,
        record=dict(record),
        cost=cost,
        projected=projected,
        burn_rate=rate,
        burn_method=how,
        runtime=runtime,
        currency=str(record.get("billing_currency") or "USD"),
        scope=scope_of(
            str(record["provider"]),
            str(record["platform"]),
            record.get("region_id"),
            record.get("sub_account_id"),
            str(record["job_id"]),
        ),
    )


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


# -- BigQuery --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BigQueryStats:
    """What a BigQuery job resource says about its progress (``jobs.list`` full projection or ``jobs.get``)."""

    processed: int | None = None
    estimated: int | None = None
    completed_units: int | None = None
    pending_units: int | None = None
    slot_ms: int | None = None
    maximum_bytes_billed: int | None = None
    timeout_ms: int | None = None
    reservation: str | None = None
    state: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def progress(self) -> float | None:
        """Share of the query's work units completed, from the newest timeline sample."""
        if self.completed_units is None or self.pending_units is None:
            return None
        total = self.completed_units + self.pending_units
        return self.completed_units / total if total > 0 else None

    @property
    def informative(self) -> bool:
        """Whether it tells the cost so far (not only the dry-run estimate)."""
        return bool(self.processed) or self.progress is not None or self.slot_ms is not None


def _int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def bigquery_stats(resource: Mapping[str, Any]) -> BigQueryStats:
    statistics = resource.get("statistics") or {}
    query = statistics.get("query") or {}
    configuration = resource.get("configuration") or {}
    timeline = query.get("timeline") or []
    last = timeline[-1] if timeline else {}
    reservation = statistics.get("reservation_id") or statistics.get("reservationId")
    usage = statistics.get("reservationUsage") or []
    if not reservation and usage:
        reservation = usage[0].get("name")
    return BigQueryStats(
        processed=_int(query.get("totalBytesProcessed") or statistics.get("totalBytesProcessed")),
        estimated=_int(query.get("estimatedBytesProcessed")),
        completed_units=_int(last.get("completedUnits")) if last else None,
        pending_units=_int(last.get("pendingUnits")) if last else None,
        slot_ms=_int(query.get("totalSlotMs") or statistics.get("totalSlotMs")),
        maximum_bytes_billed=_int((configuration.get("query") or {}).get("maximumBytesBilled")),
        timeout_ms=_int(configuration.get("jobTimeoutMs")),
        reservation=str(reservation) if reservation else None,
        state=str((resource.get("status") or {}).get("state") or "") or None,
    )


def refine_bigquery(
    record: Mapping[str, Any],
    stats: BigQueryStats,
    prices: PriceTable,
    *,
    pricing: str,
    edition: str,
    now: datetime,
) -> dict[str, Any]:
    """The lister's row with cost so far / projected / method computed from the job's statistics."""
    out = dict(record)
    use_slots = pricing == "editions" or (
        pricing == "auto" and bool(stats.reservation) and stats.reservation != "default-pipeline"
    )
    if use_slots:
        out.update(_slot_costs(stats, prices, edition, record.get("start_time"), now))
    else:
        out.update(_on_demand_costs(stats, prices))
    return out


def _on_demand_costs(stats: BigQueryStats, prices: PriceTable) -> dict[str, Any]:
    per_tib = prices.bigquery_on_demand_per_tib
    so_far: int | None
    if stats.processed:
        so_far, how = stats.processed, "bytes processed so far"
    elif stats.estimated is not None and stats.progress is not None:
        so_far = int(stats.estimated * stats.progress)
        how = f"dry-run estimate × {stats.progress:.0%} of work units done (query timeline)"
    else:
        so_far, how = None, "bytes so far not reported yet"
    ceiling = [b for b in (stats.estimated, so_far) if b is not None]
    total = max(ceiling) if ceiling else None
    capped = ""
    if total is not None and stats.maximum_bytes_billed and total > stats.maximum_bytes_billed:
        total, capped = stats.maximum_bytes_billed, " (capped at maximumBytesBilled)"
    projection = "dry-run estimate" if stats.estimated is not None else "bytes so far"
    return {
        "bytes_processed": so_far if so_far is not None else stats.estimated,
        "estimated_cost": None if so_far is None else so_far / TIB * per_tib,
        "projected_cost": None if total is None else total / TIB * per_tib,
        "cost_method": f"on-demand: {how} × ${per_tib:g}/TiB; projected: {projection}{capped}",
    }


def _slot_costs(stats: BigQueryStats, prices: PriceTable, edition: str, start: Any, now: datetime) -> dict[str, Any]:
    price = prices.slot_hour[edition]
    if stats.slot_ms is None:
        return {"estimated_cost": None, "cost_method": f"{edition} slot-hours (no slot-ms yet)"}
    so_far = stats.slot_ms / HOUR_MS * price
    limit = QUERY_TIME_LIMIT
    if stats.timeout_ms:
        limit = min(limit, timedelta(milliseconds=stats.timeout_ms))
    projected = so_far
    if isinstance(start, datetime) and now > start:
        elapsed = now - start
        remaining = max(limit - elapsed, timedelta(0))
        projected = so_far + so_far / elapsed.total_seconds() * remaining.total_seconds()
    horizon = "jobTimeoutMs" if stats.timeout_ms and limit < QUERY_TIME_LIMIT else "BigQuery's 6 h query limit"
    return {
        "slot_ms": stats.slot_ms,
        "estimated_cost": so_far,
        "projected_cost": projected,
        "cost_method": f"slot-ms so far × {edition} ${price:g}/slot-hour; projected at this slot rate to {horizon}",
    }


# -- Athena ----------------------------------------------------------------------------------------

MB = 1_000_000
ATHENA_MINIMUM_BYTES = 10 * MB


def athena_costs(
    scanned: int,
    *,
    per_tb: float,
    start: datetime | None,
    now: datetime,
    timeout: timedelta,
    cutoff: int | None,
) -> dict[str, Any]:
    """Cost so far and projection of a running Athena query."""
    billed = max(ATHENA_MINIMUM_BYTES, -(-scanned // MB) * MB) if scanned else 0
    so_far = billed / 1e12 * per_tb
    projected_bytes: float = float(billed)
    how = "no scan yet"
    if start is not None and now > start and scanned:
        elapsed = (now - start).total_seconds()
        remaining = max(timeout.total_seconds() - elapsed, 0.0)
        projected_bytes = billed + scanned / elapsed * remaining
        how = f"current scan rate until the {int(timeout.total_seconds() // 60)} min DML timeout"
    if cutoff:
        capped = min(projected_bytes, float(cutoff))
        how += " (capped at the workgroup's BytesScannedCutoffPerQuery)" if capped < projected_bytes else ""
        projected_bytes = capped
    return {
        "bytes_processed": scanned,
        "bytes_billed": billed,
        "estimated_cost": round(so_far, 6),
        "projected_cost": round(projected_bytes / 1e12 * per_tb, 6),
        "cost_method": f"bytes scanned so far (10 MB minimum) × ${per_tb:g}/TB; projected: {how}",
    }


# -- aggregates ------------------------------------------------------------------------------------


def shifted(item: Estimate, now: datetime) -> Estimate:
    """A job seen at an earlier poll (its platform is polled less often), its runtime brought to ``now``."""
    start = item.record.get("start_time")
    runtime = now - start if isinstance(start, datetime) and now >= start else item.runtime
    return replace(item, runtime=runtime)
