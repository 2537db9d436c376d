"""Monitors: which series spendwatch scores. Each value combination of a monitor's dimensions is a series."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from spendwatch.config_types import Name
from spendwatch.detect.clocks import check_zone
from spendwatch.plugins import StrictModel
from spendwatch.store.schema import DIMENSION_COLUMNS, DIMENSIONS, K8S_LABEL_PREFIX

Granularity = Literal["daily", "hourly"]
ChargeCategory = Literal["Usage", "Purchase", "Tax", "Credit", "Adjustment"]
_TAG = re.compile(r"^(tag|label):[A-Za-z0-9_.:/@+=-]{1,128}$")


def _check_dimension(value: str) -> str:
    if value in DIMENSIONS or _TAG.match(value):
        return value
    raise ValueError(f"{value!r} is not a dimension; use one of {', '.join(DIMENSIONS)}, tag:<key> or label:<key>")


Dimension = Annotated[str, AfterValidator(_check_dimension)]
TimeZone = Annotated[str, AfterValidator(check_zone)]

# Children an incident is split among, in the order the digest names them.
DEFAULT_ATTRIBUTION: tuple[str, ...] = (
    "sub_account_id",
    "service_name",
    "region_id",
    "owner",
    "job_id",
    "resource_id",
)


class MonitorConfig(StrictModel):
    """One monitor: a set of series, how finely they are watched, and what counts as material."""

    name: Name
    dimensions: list[Dimension] = Field(
        min_length=1, description="each value combination of these dimensions is one series"
    )
    granularity: list[Granularity] = Field(default_factory=lambda: list[Granularity](["daily"]), min_length=1)
    min_impact: float | None = Field(
        default=None, ge=0, description="minimum $ over expected per step to alert (default: daily 10, hourly 2)"
    )
    min_impact_pct: float | None = Field(
        default=None, ge=0, description="minimum excess as a fraction of expected (default 0.3 = 30%)"
    )
    sensitivity: float = Field(
        default=1.0, gt=0, le=10, description="scales the statistical threshold: >1 alerts more, <1 less"
    )
    time_zones: list[TimeZone] = Field(
        default_factory=list,
        description="IANA zones whose local clock this monitor's hourly series may follow through DST changes "
        "(tried first; daemon.timezone and common business zones are always tried)",
    )
    filters: dict[Dimension, list[str]] = Field(
        default_factory=dict, description="only lines whose dimension value is in the list"
    )
    charge_categories: list[ChargeCategory] = Field(
        default_factory=lambda: list[ChargeCategory](["Usage"]),
        description="scored charge categories; fees, credits and taxes are reported, not scored",
    )
    attribute_by: list[Dimension] = Field(default_factory=lambda: list(DEFAULT_ATTRIBUTION))
    max_series: int = Field(
        default=200_000, gt=0, description="refuse to score more series than this (a typo in dimensions)"
    )

    @model_validator(mode="after")
    def _no_duplicate_dimensions(self) -> MonitorConfig:
        if len(set(self.dimensions)) != len(self.dimensions):
            raise ValueError("dimensions must not repeat")
        if len(set(self.granularity)) != len(self.granularity):
            raise ValueError("granularity must not repeat")
        return self


def default_monitors() -> list[MonitorConfig]:
    """What a config without ``monitors:`` watches."""
    return [
        MonitorConfig(name="provider-total", dimensions=["provider"], granularity=["daily", "hourly"]),
        MonitorConfig(
            name="account-service",
            dimensions=["provider", "sub_account_id", "service_name"],
            granularity=["daily", "hourly"],
        ),
        MonitorConfig(name="owner", dimensions=["owner"], granularity=["daily"]),
    ]


NONE_VALUE = "(none)"


def monitor_clauses(monitor: MonitorConfig) -> tuple[list[str], list[Any]]:
    """SQL clauses (and their parameters) selecting the cost lines a monitor scores."""
    categories = list(monitor.charge_categories)
    clauses = [f"charge_category IN ({', '.join('?' * len(categories))})"]
    params: list[Any] = list(categories)
    for dimension, allowed in monitor.filters.items():
        clauses.append(f"{dimension_value_sql(dimension)} IN ({', '.join('?' * len(allowed))})")
        params.extend(allowed)
    return clauses, params


def dimension_sql(dimension: str) -> str:
    """The SQL expression of a dimension over ``cost_lines`` (``tag:team`` → ``tags['team']``).

    ``label:team`` is a Kubernetes workload label: ``tags['k8s-label/team']``; ``cluster``,
    ``namespace`` and ``workload`` are the ``k8s_*`` columns.
    """
    if dimension.startswith("tag:"):
        key = dimension[4:].replace("'", "''")
        return f"tags['{key}']"
    if dimension.startswith("label:"):
        key = (K8S_LABEL_PREFIX + dimension[6:]).replace("'", "''")
        return f"tags['{key}']"
    if dimension not in DIMENSIONS:
        raise ValueError(f"unknown dimension {dimension!r}")
    return DIMENSION_COLUMNS.get(dimension, dimension)


def dimension_value_sql(dimension: str) -> str:
    """The dimension as a series-key value: nulls become ``(none)`` so untagged spend is a series too."""
    return f"coalesce(CAST({dimension_sql(dimension)} AS VARCHAR), '{NONE_VALUE}')"
