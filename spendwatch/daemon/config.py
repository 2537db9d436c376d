"""The daemon's settings (``daemon:`` in the config): schedules, the health server, the spend gauges.

A leaf: ``spendwatch.config`` assembles it without importing the daemon itself.
"""

from __future__ import annotations

from datetime import time, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BeforeValidator, Field, field_validator

from spendwatch.config_types import Duration, parse_days
from spendwatch.plugins import StrictModel


def _parse_clock_time(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return time.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{value!r} is not a time of day; use HH:MM, e.g. '08:00'") from None
    return value


ClockTime = Annotated[time, BeforeValidator(_parse_clock_time)]


class SpendMetricsConfig(StrictModel):
    """The spend gauges on /metrics (``spend_metrics``): label values are bounded, the rest is ``other``."""

    enabled: bool = Field(default=True, description="export spend, incident excess, budget and guard burn gauges")
    top_accounts: int = Field(
        default=20, ge=1, le=500, description="accounts per provider and currency with their own label (rest: other)"
    )
    top_providers: int = Field(default=10, ge=1, le=50, description="providers with their own label (rest: other)")
    top_platforms: int = Field(default=10, ge=1, le=50, description="guard platforms with their own label")
    max_currencies: int = Field(
        default=5, ge=1, le=20, description="currencies exported (money in different currencies is never summed)"
    )
    refresh: Duration = Field(
        default=timedelta(minutes=5), description="scrapes within this reuse the last figures (bills change hourly)"
    )


class HealthConfig(StrictModel):
    enabled: bool = Field(default=True, description="serve /healthz, /readyz and /metrics")
    bind: str = Field(default="127.0.0.1", description="address to listen on (0.0.0.0 in a container)")
    port: int = Field(default=9464, ge=0, le=65535, description="TCP port (0: any free port, logged)")
    stale_after: Duration = Field(
        default=timedelta(0),
        description="/readyz fails when a source's last good collection is older (0: 3 × its interval + 10m)",
    )
    spend: SpendMetricsConfig = Field(default_factory=SpendMetricsConfig, description="spend gauges on /metrics")


class DaemonConfig(StrictModel):
    """How ``spendwatch run`` schedules the passes."""

    timezone: str = Field(default="UTC", description="IANA zone of the digest time and dates, e.g. Europe/Madrid")
    digest_at: ClockTime = Field(default=time(8, 0), description="local time the daily digest goes out")
    digest_days: str = Field(default="*", description="days it goes out: '*', 'mon-fri', 'mon,wed,fri'")
    digest_check_every: Duration = Field(
        default=timedelta(minutes=5), description="how often a missed or failed digest is looked at again"
    )
    detect_after_collection: bool = Field(default=True, description="score as soon as a collection stored data")
    detect_every: Duration = Field(default=timedelta(hours=6), description="score at least this often anyway")
    killswitch_every: Duration = Field(default=timedelta(minutes=15), description="the kill-switch pass")
    alerts_every: Duration = Field(default=timedelta(minutes=5), description="send (and retry) immediate alerts")
    housekeeping_at: ClockTime = Field(default=time(3, 30), description="local time of the daily retention pass")
    misfire_grace: Duration = Field(
        default=timedelta(minutes=15), description="a run late by less than this still runs (e.g. after a pause)"
    )
    startup_wait: Duration = Field(
        default=timedelta(minutes=30),
        description="at start, hold the digest until the first collection and detection finished (at most this long)",
    )
    shutdown_grace: Duration = Field(
        default=timedelta(seconds=7), description="on SIGTERM, how long running jobs may finish before exit"
    )
    max_workers: int = Field(default=4, ge=1, le=32, description="jobs that may run at the same time")
    health: HealthConfig = Field(default_factory=HealthConfig)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone (e.g. UTC, Europe/Madrid)") from None
        return value

    @field_validator("digest_days")
    @classmethod
    def _days(cls, value: str) -> str:
        parse_days(value)
        return value

    @field_validator("shutdown_grace")
    @classmethod
    def _grace(cls, value: timedelta) -> timedelta:
        if value > timedelta(seconds=9):
            raise ValueError("must be at most 9s: the daemon promises to exit within 10s of SIGTERM")
        return value

    @field_validator(
        "digest_check_every", "detect_every", "killswitch_every", "alerts_every", "misfire_grace", "startup_wait"
    )
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value < timedelta(seconds=1):
            raise ValueError("must be at least 1s")
        return value
