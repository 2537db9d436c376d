"""``aws-cost-explorer``: daily (and optionally hourly) AWS cost from Cost Explorer.

Cost Explorer is the quickest way in: no export to set up, answers within hours. Its limits shape
this module:

* **Two group-bys per request** (AWS rejects a third). The source plans its requests: ``group_by``
  names at most two keys (validated here, before any request); ``split_by`` adds a third by fanning
  out — one request per value of that dimension, found with ``GetDimensionValues``.
* **Record types** (usage, credits, refunds, tax, fees …) are separated without spending a group-by:
  one request asks for usage record types only (``RECORD_TYPE`` filter), a second asks for everything
  else grouped by ``[group_by[0], RECORD_TYPE]``. The two filters partition the bill, so the stored
  lines add up to the bill exactly once.
* **Every request costs $0.01.** Requests are counted (``aws_ce_requests`` counter, exported as a
  metric) and a daily budget (``max_requests_per_day``, kept in the store) stops the source before it
  overspends. Pagination (``NextPageToken``; boto3 has no paginator for it) counts too.
* **Data is restated for days.** Every run re-fetches the last ``restatement_window`` and replaces it;
  the ``Estimated`` flag of each period is kept in ``is_estimated``.
* **Hourly data exists for 14 days only** (and only when enabled in the Cost Explorer settings).
  With ``hourly: true`` the newest ``hourly_days`` are stored hourly, older days daily — each day is
  stored at one grain only, so daily and hourly series never double count.

Each calendar month (or the hourly tail) of the fetched range is one batch: a failing month yields a
``Problem`` and keeps its previous data; the others still load.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field, field_validator, model_validator

from spendwatch.collectors.aws.api import AwsApi
from spendwatch.collectors.aws.charges import CE_USAGE_RECORD_TYPES, charge_of, service_category
from spendwatch.collectors.base import SOURCES, Batch, CollectWindow, CostBatch, Problem, Source, SourceConfig
from spendwatch.collectors.tags import first_tag
from spendwatch.config_types import Duration
from spendwatch.connections import AwsConnection
from spendwatch.errors import MalformedAnswerError, PermissionDeniedError, SourceError, UserError
from spendwatch.store.schema import COST_LINE_SCHEMA, TAGS_TYPE, conform

CE_DIMENSIONS = (
    "AZ",
    "INSTANCE_TYPE",
    "LINKED_ACCOUNT",
    "OPERATION",
    "PURCHASE_TYPE",
    "REGION",
    "SERVICE",
    "USAGE_TYPE",
    "USAGE_TYPE_GROUP",
    "RECORD_TYPE",
    "OPERATING_SYSTEM",
    "TENANCY",
    "PLATFORM",
    "LEGAL_ENTITY_NAME",
    "DEPLOYMENT_OPTION",
    "DATABASE_ENGINE",
    "INSTANCE_TYPE_FAMILY",
    "BILLING_ENTITY",
    "RESOURCE_ID",
    "INVOICING_ENTITY",
)
SPLIT_DIMENSIONS = ("LINKED_ACCOUNT", "SERVICE", "REGION")
MAX_GROUP_BY = 2
# Cost Explorer key → cost-line column.
_COLUMN = {
    "LINKED_ACCOUNT": "sub_account_id",
    "SERVICE": "service_name",
    "REGION": "region_id",
    "USAGE_TYPE": "sku_id",
    "RESOURCE_ID": "resource_id",
}
COST_METRIC = "UnblendedCost"
EFFECTIVE_METRIC = "AmortizedCost"


class BudgetSpent(SourceError):
    """The daily Cost Explorer request budget is spent; the run stops, committed periods stay."""


def _check_key(key: str) -> str:
    key = key.strip()
    if key.startswith(("TAG:", "COST_CATEGORY:")):
        if len(key.split(":", 1)[1]) == 0:
            raise ValueError(f"{key!r} needs a key after the colon, e.g. TAG:owner")
        return key
    if key not in CE_DIMENSIONS:
        raise ValueError(f"{key!r} is not a Cost Explorer dimension; use one of {', '.join(CE_DIMENSIONS)}, TAG:<key>")
    return key


class CostExplorerConfig(SourceConfig):
    type: Literal["aws-cost-explorer"] = "aws-cost-explorer"
    aws: AwsConnection = Field(default_factory=lambda: AwsConnection(region="us-east-1"))
    every: Duration = Field(default=timedelta(hours=4), description="Cost Explorer refreshes a few times a day")
    group_by: list[str] = Field(
        default_factory=lambda: ["LINKED_ACCOUNT", "SERVICE"],
        min_length=1,
        description="at most two keys per request (AWS rejects three): dimensions, TAG:<key>, COST_CATEGORY:<name>",
    )
    split_by: Literal["LINKED_ACCOUNT", "SERVICE", "REGION"] | None = Field(
        default=None, description="a third dimension, fetched as one request per value (each costs $0.01)"
    )
    hourly: bool = Field(default=False, description="store the newest days hourly (enable hourly data in CE first)")
    hourly_days: int = Field(default=14, ge=1, le=14, description="AWS keeps hourly data for 14 days")
    restatement_window: Duration = Field(default=timedelta(days=3), description="re-fetched and replaced on every run")
    max_history: Duration = Field(
        default=timedelta(days=365), description="Cost Explorer keeps 13 months (38 with multi-year data enabled)"
    )
    max_requests_per_day: int = Field(
        default=100, ge=1, description="stop before more requests than this per UTC day ($0.01 each)"
    )

    @field_validator("group_by")
    @classmethod
    def _valid_group_by(cls, value: list[str]) -> list[str]:
        keys = [_check_key(k) for k in value]
        if len(keys) > MAX_GROUP_BY:
            raise ValueError(
                f"Cost Explorer accepts at most {MAX_GROUP_BY} group-by keys per request, got {len(keys)}; "
                "move one to split_by or use a second source"
            )
        if len(set(keys)) != len(keys):
            raise ValueError("group_by keys must not repeat")
        return keys

    @model_validator(mode="after")
    def _split_not_grouped(self) -> CostExplorerConfig:
        if self.split_by is not None and self.split_by in self.group_by:
            raise ValueError(f"split_by {self.split_by} is already in group_by")
        return self


@dataclass(frozen=True)
class Chunk:
    """One batch worth of fetching: [start, end) at one granularity."""

    start: datetime
    end: datetime
    granularity: Literal["DAILY", "HOURLY"]

    def time_period(self) -> dict[str, str]:
        if self.granularity == "HOURLY":
            return {"Start": f"{self.start:%Y-%m-%dT%H:%M:%SZ}", "End": f"{self.end:%Y-%m-%dT%H:%M:%SZ}"}
        return {"Start": f"{self.start:%Y-%m-%d}", "End": f"{self.end:%Y-%m-%d}"}

    @property
    def label(self) -> str:
        return f"{self.start:%Y-%m-%d}..{self.end:%Y-%m-%d} {self.granularity.lower()}"


def plan_chunks(start: datetime, end: datetime, hourly_from: datetime | None) -> list[Chunk]:
    """Calendar-month chunks of [start, end); days from ``hourly_from`` on are one hourly chunk."""
    chunks: list[Chunk] = []
    daily_end = min(end, hourly_from) if hourly_from is not None else end
    cursor = start
    while cursor < daily_end:
        month_end = datetime(cursor.year + (cursor.month == 12), cursor.month % 12 + 1, 1, tzinfo=UTC)
        stop = min(month_end, daily_end)
        chunks.append(Chunk(cursor, stop, "DAILY"))
        cursor = stop
    if hourly_from is not None and max(start, hourly_from) < end:
        chunks.append(Chunk(max(start, hourly_from), end, "HOURLY"))
    return chunks


def _day(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


@SOURCES.register("aws-cost-explorer")
class CostExplorerSource(Source):
    config_model: ClassVar[type[SourceConfig]] = CostExplorerConfig
    config: CostExplorerConfig

    def collect(self, window: CollectWindow) -> Iterator[Batch]:
        api = AwsApi(self.name, self.config.aws, self.context)
        fetcher = CostExplorerFetcher(self.config, api, self.context.store, self.name, window.until)
        start, end = self._range(window)
        hourly_from = _day(window.until) - timedelta(days=self.config.hourly_days - 1) if self.config.hourly else None
        loaded_until = end
        for chunk in plan_chunks(start, end, hourly_from):
            self.context.progress(f"{self.name}: Cost Explorer {chunk.label}")
            try:
                lines = fetcher.fetch(chunk)
            except (PermissionDeniedError, BudgetSpent):
                raise
            except SourceError as exc:
                loaded_until = min(loaded_until, chunk.start)
                yield Problem(f"{self.name} {chunk.label}", str(exc), user_error=isinstance(exc, UserError))
                continue
            yield CostBatch(chunk.start, chunk.end, lines, label=f"{self.name} {chunk.label}")
        self.context.store.set_state(self.name, "loaded_until", loaded_until.isoformat())

    def _range(self, window: CollectWindow) -> tuple[datetime, datetime]:
        today = _day(window.until)
        end = today + timedelta(days=1)
        earliest = today - self.config.max_history
        restate_from = today - self.config.restatement_window
        saved = self.context.store.get_state(self.name, "loaded_until")
        if saved is None:
            start = max(_day(window.since), earliest)
        else:
            start = max(min(_day(datetime.fromisoformat(saved)), restate_from), earliest)
        return start, end


class CostExplorerFetcher:
    """Plans, budgets and pages the requests for one chunk, and turns the answers into cost lines."""

    def __init__(self, config: CostExplorerConfig, api: AwsApi, store: Any, source: str, now: datetime) -> None:
        self.config = config
        self.api = api
        self.store = store
        self.source = source
        self.now = now
        self._client: Any | None = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self.api.client("ce", region=self.config.aws.region or "us-east-1")
        return self._client

    def fetch(self, chunk: Chunk) -> pa.Table:
        rows: list[dict[str, Any]] = []
        splits: list[str | None] = [None]
        if self.config.split_by is not None:
            splits = list(self._split_values(chunk))
        for value in splits:
            for request in self._requests(chunk, value):
                rows.extend(self._lines(chunk, request, value))
        return _to_table(rows)

    def _requests(self, chunk: Chunk, split_value: str | None) -> list[dict[str, Any]]:
        group_by = self.config.group_by
        scope = (
            [{"Dimensions": {"Key": self.config.split_by, "Values": [split_value], "MatchOptions": ["EQUALS"]}}]
            if split_value is not None and self.config.split_by is not None
            else []
        )
        if "RECORD_TYPE" in group_by:
            return [self._request(chunk, group_by, scope, kind="all")]
        usage = {"Dimensions": {"Key": "RECORD_TYPE", "Values": list(CE_USAGE_RECORD_TYPES)}}
        charges_group = [group_by[0], "RECORD_TYPE"]
        return [
            self._request(chunk, group_by, [*scope, usage], kind="usage"),
            self._request(chunk, charges_group, [*scope, {"Not": usage}], kind="charges"),
        ]

    def _request(self, chunk: Chunk, keys: list[str], filters: list[dict[str, Any]], kind: str) -> dict[str, Any]:
        request: dict[str, Any] = {
            "TimePeriod": chunk.time_period(),
            "Granularity": chunk.granularity,
            "Metrics": [COST_METRIC, EFFECTIVE_METRIC],
            "GroupBy": [_group(k) for k in keys],
        }
        if len(filters) == 1:
            request["Filter"] = filters[0]
        elif filters:
            request["Filter"] = {"And": filters}
        return {"params": request, "keys": keys, "kind": kind}

    def _split_values(self, chunk: Chunk) -> Iterator[str]:
        token: str | None = None
        while True:
            params: dict[str, Any] = {
                "TimePeriod": {"Start": f"{chunk.start:%Y-%m-%d}", "End": f"{_day(chunk.end):%Y-%m-%d}"},
                "Dimension": self.config.split_by,
            }
            if chunk.end > _day(chunk.end):
                params["TimePeriod"]["End"] = f"{_day(chunk.end) + timedelta(days=1):%Y-%m-%d}"
            if token:
                params["NextPageToken"] = token
            answer = self._call("GetDimensionValues", params)
            for item in answer.get("DimensionValues", []):
                yield str(item["Value"])
            token = answer.get("NextPageToken")
            if not token:
                return

    def _lines(self, chunk: Chunk, request: dict[str, Any], split_value: str | None) -> Iterator[dict[str, Any]]:
        params = dict(request["params"])
        token: str | None = None
        while True:
            if token:
                params["NextPageToken"] = token
            answer = self._call("GetCostAndUsage", params)
            names = {
                str(a.get("Value")): str(a.get("Attributes", {}).get("description") or "")
                for a in answer.get("DimensionValueAttributes", [])
            }
            for period in answer.get("ResultsByTime", []):
                yield from self._period_lines(chunk, request, period, names, split_value)
            token = answer.get("NextPageToken")
            if not token:
                return

    def _period_lines(
        self,
        chunk: Chunk,
        request: dict[str, Any],
        period: dict[str, Any],
        names: dict[str, str],
        split_value: str | None,
    ) -> Iterator[dict[str, Any]]:
        start, end = _period(period, chunk)
        estimated = bool(period.get("Estimated", False))
        for group in period.get("Groups", []):
            keys = group.get("Keys", [])
            if len(keys) != len(request["keys"]):
                raise MalformedAnswerError(
                    f"source {self.source}: Cost Explorer answered {len(keys)} group key(s) for "
                    f"{len(request['keys'])} group-by(s) in {chunk.label}"
                )
            line = _line(dict(zip(request["keys"], keys, strict=True)), request["kind"], group, self.source, chunk)
            if split_value is not None and self.config.split_by is not None:
                line[_COLUMN.get(self.config.split_by, "sub_account_id")] = split_value
            line["sub_account_name"] = names.get(line.get("sub_account_id") or "") or None
            line["service_category"] = service_category(None, line.get("service_name"))
            line["owner"] = first_tag(line["tags"], self.config.owner_tags)
            line["job_id"] = first_tag(line["tags"], self.config.job_tags)
            line.update(charge_period_start=start, charge_period_end=end, is_estimated=estimated)
            yield line

    def _call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        self._spend_budget()
        self.api.context.count("aws_ce_requests")
        try:
            return self.api.call(self.client, operation, **params)
        except PermissionDeniedError:
            raise
        except SourceError:
            raise
        except Exception as exc:
            raise self.api.explain(exc, "ce", operation) from None

    def _spend_budget(self) -> None:
        key = f"requests:{self.now.astimezone(UTC):%Y-%m-%d}"
        used = int(self.store.get_state(self.source, key) or 0)
        if used >= self.config.max_requests_per_day:
            raise BudgetSpent(
                f"source {self.source}: Cost Explorer request budget spent ({used} of "
                f"{self.config.max_requests_per_day} today, $0.01 each); "
                "raise max_requests_per_day or collect less often"
            )
        self.store.set_state(self.source, key, str(used + 1))


def requests_today(store: Any, source: str, now: datetime) -> int:
    """How many Cost Explorer requests ``source`` made on the UTC day of ``now``."""
    return int(store.get_state(source, f"requests:{now.astimezone(UTC):%Y-%m-%d}") or 0)


def _group(key: str) -> dict[str, str]:
    if key.startswith("TAG:"):
        return {"Type": "TAG", "Key": key[4:]}
    if key.startswith("COST_CATEGORY:"):
        return {"Type": "COST_CATEGORY", "Key": key[len("COST_CATEGORY:") :]}
    return {"Type": "DIMENSION", "Key": key}


def _period(period: dict[str, Any], chunk: Chunk) -> tuple[datetime, datetime]:
    span = period.get("TimePeriod", {})
    try:
        start = _parse_time(str(span["Start"]))
        end = _parse_time(str(span["End"]))
    except (KeyError, ValueError):
        raise MalformedAnswerError(
            f"Cost Explorer answered a period without a valid TimePeriod in {chunk.label}"
        ) from None
    if start < chunk.start or start >= chunk.end:
        raise MalformedAnswerError(
            f"Cost Explorer answered period {span.get('Start')} outside the requested {chunk.label}"
        )
    return start, min(end, chunk.end) if end > start else start + timedelta(days=1)


def _parse_time(text: str) -> datetime:
    if len(text) == 10:
        return datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=UTC)
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _line(keys: dict[str, str], kind: str, group: dict[str, Any], source: str, chunk: Chunk) -> dict[str, Any]:
    metrics = group.get("Metrics", {})
    try:
        billed = float(metrics[COST_METRIC]["Amount"])
        effective = float(metrics.get(EFFECTIVE_METRIC, metrics[COST_METRIC])["Amount"])
        currency = str(metrics[COST_METRIC]["Unit"])
    except (KeyError, TypeError, ValueError):
        raise MalformedAnswerError(
            f"source {source}: Cost Explorer group {group.get('Keys')} in {chunk.label} has no numeric {COST_METRIC}"
        ) from None
    if not (math.isfinite(billed) and math.isfinite(effective)) or not currency.strip():
        raise MalformedAnswerError(
            f"source {source}: Cost Explorer group {group.get('Keys')} in {chunk.label} has {COST_METRIC} "
            f"{billed} {currency!r}, not a finite amount in a currency"
        )
    line: dict[str, Any] = {"provider": "aws", "billed_cost": billed, "effective_cost": effective}
    line["billing_currency"] = currency
    tags: list[tuple[str, str]] = []
    category, frequency = ("Usage", "Usage-Based") if kind == "usage" else ("Adjustment", "One-Time")
    for key, value in keys.items():
        if key == "RECORD_TYPE":
            category, frequency = charge_of(value)
        elif key.startswith("TAG:"):
            tag_value = value.split("$", 1)[1] if "$" in value else value
            if tag_value:
                tags.append((key[4:], tag_value))
        elif key.startswith("COST_CATEGORY:"):
            cat_value = value.split("$", 1)[1] if "$" in value else value
            if cat_value:
                tags.append((f"cost_category:{key[len('COST_CATEGORY:') :]}", cat_value))
        elif key in _COLUMN:
            line[_COLUMN[key]] = value or None
        else:
            tags.append((f"aws:ce:{key.lower()}", value))
    if kind == "usage":
        category, frequency = "Usage", "Usage-Based"
    line.update(charge_category=category, charge_frequency=frequency, tags=tags or None)
    return line


def _to_table(rows: list[dict[str, Any]]) -> pa.Table:
    if not rows:
        return COST_LINE_SCHEMA.empty_table()
    columns = {
        field.name: pa.array([r.get(field.name) for r in rows], type=field.type)
        for field in COST_LINE_SCHEMA
        if field.name != "tags"
    }
    columns["tags"] = pa.array([r.get("tags") for r in rows], type=TAGS_TYPE)
    return conform(pa.table(columns), COST_LINE_SCHEMA)
