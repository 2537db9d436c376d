"""``opencost``: Kubernetes workload costs from OpenCost's allocation API, for any cluster.

For on-premises clusters and for finer than daily data. One request per UTC day of the window:
``GET <endpoint>/allocation?window=<start>,<end>&aggregate=cluster,namespace,controllerKind,controller
&step=1h&accumulate=false&includeIdle=true``. Each allocation of each step becomes one cost line per
non-zero cost component (``sku_id`` ``cpu``, ``gpu``, ``ram``, ``pv``, ``network``, ``loadBalancer``,
``shared``, ``external``, and ``adjustment`` for what ``totalCost`` holds beyond them), so the lines
of a step add up to OpenCost's ``totalCost`` exactly. ``__idle__`` (capacity nobody requested) and
``__unallocated__`` are kept as lines without a workload.

OpenCost prices pods at its own price sheet (on-demand list prices unless it is given the bill), so
the lines are ``is_estimated``. Do not point ``opencost`` and a billing source at the same cluster's
spend and add them up: the same node would be counted twice (docs/kubernetes.md).

The HTTP call is a seam (``context.clients["opencost_fetch"]``: ``url → bytes``); the default uses
the standard library with the configured timeout. Errors name the URL and say what OpenCost answered.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field

from spendwatch.collectors.base import SOURCES, Batch, CollectWindow, CostBatch, Problem, Source, SourceConfig
from spendwatch.collectors.k8s.costs import KubernetesLabels, first_label, label_tag
from spendwatch.collectors.tags import first_tag
from spendwatch.config_types import Duration
from spendwatch.errors import SourceError
from spendwatch.store.schema import COST_LINE_SCHEMA, TAGS_TYPE, conform

COMPONENTS = (
    ("cpu", "cpuCost"),
    ("gpu", "gpuCost"),
    ("ram", "ramCost"),
    ("pv", "pvCost"),
    ("network", "networkCost"),
    ("loadBalancer", "loadBalancerCost"),
    ("shared", "sharedCost"),
    ("external", "externalCost"),
)
SPECIAL = {"__idle__": "idle", "__unallocated__": "unallocated", "__unmounted__": "unmounted"}
Fetch = Callable[[str], bytes]


class OpenCostConfig(SourceConfig):
    type: Literal["opencost"] = "opencost"
    endpoint: str = Field(pattern=r"^https?://", description="OpenCost's API, e.g. http://opencost.opencost:9003")
    path: str = Field(
        default="/allocation", pattern=r"^/[A-Za-z0-9/_-]*$", description="/allocation (or /allocation/compute)"
    )
    cluster: str | None = Field(default=None, description="cluster name when OpenCost does not report one")
    provider: str = Field(
        default="kubernetes",
        pattern=r"^[a-z][a-z0-9-]{1,30}$",
        description="aws, gcp, azure, or kubernetes (on-premises)",
    )
    account: str | None = Field(
        default=None, description="AWS account / GCP project the cluster bills to (sub_account_id)"
    )
    region: str | None = Field(default=None, description="the cluster's region")
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$", description="the currency of OpenCost's price sheet")
    step: Literal["1h", "1d"] = Field(default="1h", description="hourly or daily lines")
    resolution: str = Field(default="1m", pattern=r"^\d+[mh]$", description="OpenCost's Prometheus resolution")
    restatement: Duration = Field(default=timedelta(days=2), description="re-read and replaced every run")
    timeout: Duration = Field(default=timedelta(seconds=120), description="per request")
    kubernetes: KubernetesLabels = Field(default_factory=KubernetesLabels)
    settle_lag: Duration = Field(default=timedelta(hours=2), description="OpenCost's last hour is still filling")


@SOURCES.register("opencost")
class OpenCostSource(Source):
    config_model: ClassVar[type[SourceConfig]] = OpenCostConfig
    config: OpenCostConfig

    def collect(self, window: CollectWindow) -> Iterator[Batch]:
        unit = timedelta(hours=1) if self.config.step == "1h" else timedelta(days=1)
        end = _floor(window.until, unit)
        start = self._start(window, end)
        day = start
        while day < end:
            nxt = min(_floor(day, timedelta(days=1)) + timedelta(days=1), end)
            url = self.url(day, nxt)
            try:
                document = self._get(url)
                lines = allocation_lines(document, self.config, url)
            except SourceError as exc:
                yield Problem(f"{self.name} {day:%Y-%m-%d}", str(exc))
                day = nxt
                continue
            self.context.count("opencost_requests")
            yield CostBatch(day, nxt, lines, label=f"{self.name} {day:%Y-%m-%d}")
            self.context.store.set_state(self.name, "loaded_until", nxt.isoformat())
            day = nxt

    def _start(self, window: CollectWindow, end: datetime) -> datetime:
        saved = self.context.store.get_state(self.name, "loaded_until")
        start = window.since
        if saved:
            start = max(start, datetime.fromisoformat(saved) - self.config.restatement)
        unit = timedelta(hours=1) if self.config.step == "1h" else timedelta(days=1)
        return min(_floor(start, unit), end)

    def url(self, start: datetime, end: datetime) -> str:
        query = {
            "window": f"{start:%Y-%m-%dT%H:%M:%SZ},{end:%Y-%m-%dT%H:%M:%SZ}",
            "aggregate": "cluster,namespace,controllerKind,controller",
            "step": self.config.step,
            "resolution": self.config.resolution,
            "accumulate": "false",
            "includeIdle": "true",
        }
        return f"{self.config.endpoint.rstrip('/')}{self.config.path}?{urllib.parse.urlencode(query)}"

    def _get(self, url: str) -> Any:
        fetch: Fetch = self.context.clients.get("opencost_fetch") or self._fetch
        try:
            body = fetch(url)
        except urllib.error.HTTPError as exc:
            raise SourceError(f"{url}: OpenCost answered HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise SourceError(f"{url}: cannot reach OpenCost: {getattr(exc, 'reason', exc)}") from None
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise SourceError(f"{url}: OpenCost's answer is not JSON") from None

    def _fetch(self, url: str) -> bytes:
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        with urllib.request.urlopen(request, timeout=self.config.timeout.total_seconds()) as answer:
            data: bytes = answer.read()
            return data


def _floor(moment: datetime, unit: timedelta) -> datetime:
    moment = moment.astimezone(UTC)
    if unit >= timedelta(days=1):
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return moment.replace(minute=0, second=0, microsecond=0)


def _time(value: Any, url: str) -> datetime:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        raise SourceError(f"{url}: malformed allocation: window time {value!r}") from None


def _number(allocation: dict[str, Any], key: str, url: str, name: str) -> float:
    value = allocation.get(key)
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SourceError(f"{url}: malformed allocation {name!r}: {key} is {value!r}, not a number")
    return float(value)


def allocation_lines(document: Any, config: OpenCostConfig, url: str) -> pa.Table:
    """OpenCost's answer → cost lines; ``SourceError`` naming the URL and the allocation when malformed."""
    if not isinstance(document, dict) or document.get("code") not in (200, None) or "data" not in document:
        message = document.get("message") if isinstance(document, dict) else None
        raise SourceError(f"{url}: OpenCost did not answer with allocations ({message or 'no data'})")
    sets = document["data"] or []
    if not isinstance(sets, list) or not all(isinstance(s, dict) or s is None for s in sets):
        raise SourceError(f"{url}: malformed allocation answer: data must be a list of allocation sets")
    rows: dict[str, list[Any]] = {f.name: [] for f in COST_LINE_SCHEMA}
    for allocation_set in sets:
        for name, allocation in (allocation_set or {}).items():
            if not isinstance(allocation, dict):
                raise SourceError(f"{url}: malformed allocation {name!r}: not an object")
            _allocation_rows(rows, str(name), allocation, config, url)
    arrays = {f.name: pa.array(rows[f.name], type=TAGS_TYPE if f.name == "tags" else f.type) for f in COST_LINE_SCHEMA}
    return conform(pa.table(arrays), COST_LINE_SCHEMA)


def _allocation_rows(
    rows: dict[str, list[Any]], name: str, allocation: dict[str, Any], config: OpenCostConfig, url: str
) -> None:
    window = allocation.get("window") or {}
    start = _time(window.get("start") or allocation.get("start"), url)
    end = _time(window.get("end") or allocation.get("end"), url)
    props = allocation.get("properties") or {}
    labels = {str(k): str(v) for k, v in (props.get("labels") or {}).items()}
    special = next((v for k, v in SPECIAL.items() if name == k or name.endswith("/" + k)), None)
    cluster = props.get("cluster") or config.cluster
    namespace = None if special else props.get("namespace")
    workload = None if special else props.get("controller")
    kind = None if special else props.get("controllerKind")
    settings = config.kubernetes
    tags = [(label_tag(k), labels[k]) for k in settings.stored_labels() if labels.get(k)]
    tags += [(k, v) for k, v in (("k8s:kind", kind), ("k8s:allocation", special)) if v]
    owner = first_label(labels, settings.owner_labels) or first_tag(labels, config.owner_tags)
    total = _number(allocation, "totalCost", url, name)
    parts = [(sku, _number(allocation, key, url, name)) for sku, key in COMPONENTS]
    remainder = round(total - sum(cost for _, cost in parts), 9)
    parts.append(("adjustment", remainder))
    base = {
        "provider": config.provider,
        "sub_account_id": config.account or cluster,
        "sub_account_name": cluster,
        "service_name": "Kubernetes",
        "service_category": "Compute",
        "region_id": config.region,
        "resource_id": f"k8s://{cluster}/{namespace}/{kind}/{workload}" if workload and kind and cluster else None,
        "resource_name": workload or special,
        "charge_category": "Usage",
        "charge_frequency": "Usage-Based",
        "charge_period_start": start,
        "charge_period_end": end,
        "billing_currency": config.currency,
        "tags": tags or None,
        "owner": owner,
        "job_id": first_tag(labels, config.job_tags),
        "is_estimated": True,
        "k8s_cluster": cluster,
        "k8s_namespace": namespace,
        "k8s_workload": workload,
    }
    for sku, cost in parts:
        if cost == 0.0:
            continue
        row = {**base, "sku_id": sku, "charge_description": f"OpenCost {sku} cost", "billed_cost": cost,
               "effective_cost": cost, "list_cost": None}  # fmt: skip
        for column, values in rows.items():
            values.append(row.get(column))
