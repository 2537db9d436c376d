"""The ``guard:`` config section: how often the watch loop polls, and the limits it enforces.

A limit left out of a guard inherits the value in ``defaults``; ``null`` switches it off for that guard.
Per-job limits (``job_cost``, ``job_projected_cost``, ``max_runtime``) come from the first guard whose
``match`` selects the job (else ``defaults``). Aggregate limits (``user_daily_cost``,
``project_burn_rate``) are evaluated per guard over every job its ``match`` selects (``defaults``
selects every job) and are never inherited.

Everything is validated when the config is loaded: an interval under 15 s, a negative cap, an unknown
platform, rate-limit key or key anywhere is a one-line error naming the key.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from spendwatch.collectors.gcp.prices import PriceOverrides
from spendwatch.config_types import Duration, Name
from spendwatch.plugins import StrictModel
from spendwatch.store.records import SEVERITY_ORDER

PlatformName = Literal[
    "bigquery", "athena", "sagemaker", "emr", "glue", "batch", "vertex", "dataproc", "kubernetes"
]  # fmt: skip
PLATFORMS: tuple[str, ...] = (
    "bigquery", "athena", "sagemaker", "emr", "glue", "batch", "vertex", "dataproc", "kubernetes"
)  # fmt: skip
AWS_PLATFORMS: tuple[str, ...] = ("athena", "sagemaker", "emr", "glue", "batch")
GCP_PLATFORMS: tuple[str, ...] = ("bigquery", "vertex", "dataproc")
K8S_PLATFORMS: tuple[str, ...] = ("kubernetes",)
SeverityName = Literal["low", "medium", "high", "critical"]
MIN_EVERY = timedelta(seconds=15)
LIMIT_NAMES: tuple[str, ...] = (
    "job_cost",
    "job_projected_cost",
    "max_runtime",
    "user_daily_cost",
    "project_burn_rate",
)
PER_JOB_LIMITS: tuple[str, ...] = ("job_cost", "job_projected_cost", "max_runtime")


def _globs(patterns: list[str], value: str | None) -> bool:
    if not patterns:
        return True
    return value is not None and any(fnmatch.fnmatchcase(value, p) for p in patterns)


class GuardMatch(StrictModel):
    """Which running jobs a guard covers. Every given condition must hold; an empty match covers all."""

    platforms: list[PlatformName] = Field(default_factory=list, description="bigquery, athena, sagemaker … kubernetes")
    providers: list[Literal["aws", "gcp", "kubernetes"]] = Field(
        default_factory=list, description="kubernetes: clusters that run neither on AWS nor GCP"
    )
    accounts: list[str] = Field(default_factory=list, description="AWS accounts / GCP projects (globs)")
    users: list[str] = Field(default_factory=list, description="users or owners (globs)")
    labels: dict[str, list[str]] = Field(
        default_factory=dict, description="label/tag → allowed values (globs); [] means any value"
    )
    clusters: list[str] = Field(default_factory=list, description="Kubernetes clusters (globs; kubernetes-jobs)")
    namespaces: list[str] = Field(default_factory=list, description="Kubernetes namespaces (globs)")

    def matches(self, job: Mapping[str, Any]) -> bool:
        if self.platforms and job.get("platform") not in self.platforms:
            return False
        if self.providers and job.get("provider") not in self.providers:
            return False
        if not _globs(self.accounts, job.get("sub_account_id")):
            return False
        if (self.clusters or self.namespaces) and not self._k8s(job.get("labels") or {}):
            return False
        who = [job.get("user"), job.get("owner")]
        if self.users and not any(_globs(self.users, w) for w in who if w):
            return False
        labels: Mapping[str, str] = job.get("labels") or {}
        for key, patterns in self.labels.items():
            if key not in labels or (patterns and not _globs(patterns, labels[key])):
                return False
        return True

    def _k8s(self, labels: Mapping[str, str]) -> bool:
        # A workload's cluster and namespace are the labels its record carries (k8s:cluster, k8s:namespace).
        return _globs(self.clusters, labels.get("k8s:cluster")) and _globs(self.namespaces, labels.get("k8s:namespace"))


class Limits(StrictModel):
    """The caps one guard enforces (``null`` = not checked)."""

    job_cost: float | None = Field(default=None, ge=0, description="per-job cost so far, in the job's currency")
    job_projected_cost: float | None = Field(
        default=None, ge=0, description="per-job cost at completion (or at its time/byte limit)"
    )
    max_runtime: Duration | None = Field(default=None, description="per-job wall-clock run time")
    user_daily_cost: float | None = Field(
        default=None, ge=0, description="a user's jobs today (finished today + running now)"
    )
    project_burn_rate: float | None = Field(
        default=None, ge=0, description="$ per hour of every running job in one AWS account / GCP project"
    )
    severity: SeverityName = Field(default="high", description="severity of the incident a breach opens")
    critical_at: float | None = Field(
        default=4.0, ge=1.0, description="a breach this many times over its cap is critical (null: never)"
    )

    @field_validator("max_runtime")
    @classmethod
    def _positive_runtime(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value < timedelta(minutes=1):
            raise ValueError("max_runtime must be at least 1m")
        return value


class GuardRule(Limits):
    """A named guard: a match and the limits for what it matches (left-out limits inherit ``defaults``)."""

    name: Name
    match: GuardMatch = Field(default_factory=GuardMatch)

    def explicit(self, limit: str) -> bool:
        return limit in self.model_fields_set


class PlatformWatch(StrictModel):
    """Per-platform switches of the watch loop."""

    enabled: bool = True
    every: Duration | None = Field(
        default=None, description="poll this platform less often than guard.every (e.g. glue: 5m)"
    )


def _default_limits() -> Limits:
    return Limits(
        job_cost=500.0,
        job_projected_cost=2_000.0,
        user_daily_cost=2_000.0,
        project_burn_rate=500.0,
    )


class GuardConfig(StrictModel):
    """The runaway-job guard: a fast watch loop over running jobs, limits, and incidents on a breach."""

    enabled: bool = Field(default=True, description="run the watch loop in the daemon")
    every: Duration = Field(default=timedelta(seconds=60), description="poll interval (at least 15s)")
    sources: list[Name] = Field(
        default_factory=list,
        description="aws-jobs / gcp-jobs / kubernetes-jobs sources to watch (default: every one configured)",
    )
    platforms: dict[PlatformName, PlatformWatch] = Field(default_factory=dict)
    defaults: Limits = Field(default_factory=_default_limits)
    guards: list[GuardRule] = Field(default_factory=list, description="first match wins for per-job limits")
    killswitch: bool = Field(default=True, description="run the kill switch on guard incidents right after each poll")
    record_jobs: bool = Field(default=True, description="keep the running jobs seen in the store's jobs table")
    day_timezone: str = Field(default="UTC", description="IANA zone whose midnight starts a user's day")
    describe_ttl: Duration = Field(
        default=timedelta(minutes=10), description="how long a job's static description is reused between polls"
    )
    describe_threshold: float = Field(
        default=0.5, gt=0, le=1, description="describe a job once its projection reaches this share of a cap"
    )
    max_describes: int = Field(default=50, ge=0, le=1000, description="extra describe calls per poll, at most")
    athena_query_timeout: Duration = Field(
        default=timedelta(minutes=30), description="Athena's DML query timeout (projection horizon)"
    )
    reopen_within: Duration = Field(
        default=timedelta(hours=1), description="a burn-rate breach within this of the last one reopens it"
    )
    rate_limits: dict[str, float] = Field(
        default_factory=dict, description="API → requests per second we allow ourselves (see docs/guard.md)"
    )
    aws_prices: dict[str, float] = Field(
        default_factory=dict, description="$/hour by instance type and special rates, over the aws-jobs prices"
    )
    gcp_prices: PriceOverrides | None = Field(default=None, description="over the gcp-jobs prices")

    @field_validator("every")
    @classmethod
    def _fast_enough(cls, value: timedelta) -> timedelta:
        if value < MIN_EVERY:
            raise ValueError("must be at least 15s (the providers' list APIs are rate limited)")
        if value > timedelta(hours=1):
            raise ValueError("must be at most 1h (a guard that polls less often is not a guard)")
        return value

    @field_validator("platforms")
    @classmethod
    def _platform_intervals(cls, value: dict[str, PlatformWatch]) -> dict[str, PlatformWatch]:
        for name, watch in value.items():
            if watch.every is not None and watch.every < MIN_EVERY:
                raise ValueError(f"{name}.every must be at least 15s")
        return value

    @field_validator("day_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone (e.g. UTC, Europe/Madrid)") from None
        return value

    @field_validator("rate_limits")
    @classmethod
    def _known_apis(cls, value: dict[str, float]) -> dict[str, float]:
        from spendwatch.guard.ratelimit import DEFAULT_LIMITS

        for api, rate in value.items():
            if api not in DEFAULT_LIMITS:
                raise ValueError(f"unknown API {api!r} (known: {', '.join(sorted(DEFAULT_LIMITS))})")
            if not 0 < rate <= DEFAULT_LIMITS[api].ceiling:
                raise ValueError(
                    f"{api}: {rate} requests/s is outside (0, {DEFAULT_LIMITS[api].ceiling:g}] "
                    f"({DEFAULT_LIMITS[api].documented})"
                )
        return value

    @model_validator(mode="after")
    def _unique(self) -> GuardConfig:
        seen: set[str] = set()
        for guard in self.guards:
            if guard.name in seen or guard.name == "default":
                raise ValueError(f"guards: the name {guard.name!r} is used twice (or is the reserved 'default')")
            seen.add(guard.name)
        return self

    # -- lookups ----------------------------------------------------------------------------------

    def interval(self, platform: str) -> timedelta:
        watch = self.platforms.get(platform)  # type: ignore[call-overload]
        return watch.every if watch is not None and watch.every is not None else self.every

    def platform_enabled(self, platform: str) -> bool:
        watch = self.platforms.get(platform)  # type: ignore[call-overload]
        return watch is None or watch.enabled

    def guard_for(self, job: Mapping[str, Any]) -> GuardRule | None:
        return next((g for g in self.guards if g.match.matches(job)), None)

    def job_limit(self, job: Mapping[str, Any], limit: str) -> tuple[str, Any, Limits]:
        """(guard name, the limit's value, the guard's settings) that apply to ``job``."""
        guard = self.guard_for(job)
        if guard is not None and guard.explicit(limit):
            return guard.name, getattr(guard, limit), guard
        if guard is not None:
            return guard.name, getattr(self.defaults, limit), guard
        return "default", getattr(self.defaults, limit), self.defaults

    def aggregate_scopes(self, limit: str) -> list[tuple[str, GuardMatch, float, Limits]]:
        """Every (guard name, match, cap, settings) that enforces aggregate ``limit``."""
        scopes: list[tuple[str, GuardMatch, float, Limits]] = []
        value = getattr(self.defaults, limit)
        if value is not None:
            scopes.append(("default", GuardMatch(), float(value), self.defaults))
        for guard in self.guards:
            value = getattr(guard, limit)
            if guard.explicit(limit) and value is not None:
                scopes.append((guard.name, guard.match, float(value), guard))
        return scopes

    def lowest_cap(self, job: Mapping[str, Any]) -> float | None:
        """The smallest per-job $ cap that applies to ``job`` (for deciding whom to describe)."""
        caps = [self.job_limit(job, name)[1] for name in ("job_cost", "job_projected_cost")]
        values = [float(c) for c in caps if c is not None]
        return min(values) if values else None


def severity_for(settings: Limits, ratio: float) -> str:
    """The guard's severity, raised to critical when the breach is ``critical_at`` times over its cap."""
    if settings.critical_at is not None and ratio >= settings.critical_at:
        return "critical"
    return settings.severity if settings.severity in SEVERITY_ORDER else "high"
