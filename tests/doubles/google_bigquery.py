"""BigQuery's REST API on the fake Google server: tables.get, jobs.insert/get/list, getQueryResults.

The real ``google-cloud-bigquery`` client runs unchanged against it. A test registers tables (their
API schema and partitioning) and a query handler that answers each query job; the fake keeps jobs,
pages results by ``maxResults``/``pageToken`` (and caps pages at ``max_page_rows`` like the real
API's response-size limit), encodes rows in the typed ``{"f": [{"v": …}]}`` wire format (TIMESTAMP
as int64 micros when ``formatOptions.useInt64Timestamp`` is set, else float seconds), and reports
job failures the way BigQuery does (``status.errorResult`` + an error on getQueryResults).

Usage::

    bq = FakeBigQuery(google_api)
    bq.add_table("billing-proj.billing.gcp_billing_export_v1_X", schema=EXPORT_SCHEMA, partitioned=True)
    bq.on_query(lambda call: QueryAnswer(schema=[...], rows=[{...}], total_bytes_billed=10 << 20))
    client = bigquery.Client(project="billing-proj", credentials=AnonymousCredentials(),
                             client_options={"api_endpoint": google_api.endpoint})
    ... ; [call] = bq.queries  # QueryCall: sql, parameters, configuration
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from tests.doubles.google import ApiError, ApiRequest, GoogleApiServer

BQ = "/bigquery/v2/projects/{project}"


@dataclass
class QueryCall:
    """A query job as the client created it."""

    project: str
    job_id: str
    sql: str
    parameters: dict[str, Any]
    parameter_types: dict[str, str]
    configuration: dict[str, Any]
    location: str | None

    @property
    def maximum_bytes_billed(self) -> int | None:
        value = self.configuration["query"].get("maximumBytesBilled")
        return None if value is None else int(value)


@dataclass
class QueryAnswer:
    """What the fake returns for a query: rows in a typed schema, statistics, or a job failure."""

    schema: list[dict[str, Any]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    total_bytes_billed: int = 0
    total_bytes_processed: int = 0
    total_slot_ms: int = 0
    error: ApiError | None = None
    polls_before_done: int = 0


@dataclass
class _Job:
    call: QueryCall
    answer: QueryAnswer
    created_ms: int
    polls_left: int

    def done(self) -> bool:
        return self.polls_left <= 0


def field_schema(
    name: str, kind: str, mode: str = "NULLABLE", fields: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "type": kind, "mode": mode}
    if fields:
        out["fields"] = fields
    return out


class FakeBigQuery:
    def __init__(
        self, server: GoogleApiServer, *, user_email: str = "spendwatch@collector.iam.gserviceaccount.com"
    ) -> None:
        self.server = server
        self.user_email = user_email
        self.tables: dict[str, dict[str, Any]] = {}
        self.queries: list[QueryCall] = []
        self.listed_jobs: dict[str, list[dict[str, Any]]] = {}
        self.max_page_rows = 1000
        self._jobs: dict[str, _Job] = {}
        self._handler: Callable[[QueryCall], QueryAnswer] = lambda call: QueryAnswer()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        server.add_route("GET", BQ + "/datasets/{dataset}/tables/{table}", self._tables_get)
        server.add_route("POST", BQ + "/jobs", self._jobs_insert)
        server.add_route("GET", BQ + "/jobs/{job_id}", self._jobs_get)
        server.add_route("GET", BQ + "/queries/{job_id}", self._get_query_results)
        server.add_route("GET", BQ + "/jobs", self._jobs_list)

    # -- configuration ------------------------------------------------------------------------

    def add_table(
        self,
        path: str,
        schema: list[dict[str, Any]],
        *,
        partitioned: bool = True,
        partition_field: str | None = None,
        location: str = "US",
    ) -> None:
        project, dataset, table = path.split(".")
        resource: dict[str, Any] = {
            "kind": "bigquery#table",
            "id": f"{project}:{dataset}.{table}",
            "tableReference": {"projectId": project, "datasetId": dataset, "tableId": table},
            "schema": {"fields": schema},
            "type": "TABLE",
            "location": location,
            "creationTime": "1700000000000",
        }
        if partitioned:
            resource["timePartitioning"] = {"type": "DAY"}
            if partition_field:
                resource["timePartitioning"]["field"] = partition_field
        self.tables[path] = resource

    def on_query(self, handler: Callable[[QueryCall], QueryAnswer]) -> None:
        self._handler = handler

    def add_listed_jobs(self, project: str, jobs: list[dict[str, Any]]) -> None:
        """Job resources that jobs.list returns for ``project`` (filtered by stateFilter)."""
        self.listed_jobs.setdefault(project, []).extend(jobs)

    # -- routes -------------------------------------------------------------------------------

    def _tables_get(self, request: ApiRequest) -> dict[str, Any]:
        p = request.params
        path = f"{p['project']}.{p['dataset']}.{p['table']}"
        if path not in self.tables:
            raise ApiError(404, f"Not found: Table {p['project']}:{p['dataset']}.{p['table']}", reason="notFound")
        return self.tables[path]

    def _jobs_insert(self, request: ApiRequest) -> dict[str, Any]:
        body = request.json
        reference = dict(body.get("jobReference") or {})
        project = request.params["project"]
        job_id = reference.get("jobId") or f"job_{next(self._ids)}"
        configuration = body["configuration"]
        query = configuration["query"]
        parameters, types = _decode_parameters(query.get("queryParameters", []))
        call = QueryCall(project, job_id, query["query"], parameters, types, configuration, reference.get("location"))
        with self._lock:
            self.queries.append(call)
        answer = self._handler(call)
        job = _Job(call, answer, 1_763_600_000_000 + len(self.queries), answer.polls_before_done)
        with self._lock:
            self._jobs[job_id] = job
        return self._resource(job)

    def _job(self, request: ApiRequest) -> _Job:
        job_id = request.params["job_id"]
        if job_id not in self._jobs:
            raise ApiError(404, f"Not found: Job {request.params['project']}:{job_id}", reason="notFound")
        return self._jobs[job_id]

    def _jobs_get(self, request: ApiRequest) -> dict[str, Any]:
        job = self._job(request)
        job.polls_left -= 1
        return self._resource(job)

    def _resource(self, job: _Job) -> dict[str, Any]:
        call, answer = job.call, job.answer
        state = "DONE" if job.done() else "RUNNING"
        status: dict[str, Any] = {"state": state}
        if state == "DONE" and answer.error is not None:
            error = answer.error.body()["error"]["errors"][0]
            status["errorResult"] = error
            status["errors"] = [error]
        statistics: dict[str, Any] = {"creationTime": str(job.created_ms), "startTime": str(job.created_ms + 5)}
        if state == "DONE":
            statistics["endTime"] = str(job.created_ms + 900)
            statistics["totalBytesProcessed"] = str(answer.total_bytes_processed)
            statistics["query"] = {
                "totalBytesProcessed": str(answer.total_bytes_processed),
                "totalBytesBilled": str(answer.total_bytes_billed),
                "totalSlotMs": str(answer.total_slot_ms),
                "cacheHit": False,
                "statementType": "SELECT",
            }
        return {
            "kind": "bigquery#job",
            "id": f"{call.project}:{call.location or 'US'}.{call.job_id}",
            "jobReference": {"projectId": call.project, "jobId": call.job_id, "location": call.location or "US"},
            "configuration": call.configuration,
            "status": status,
            "statistics": statistics,
            "user_email": self.user_email,
        }

    def _get_query_results(self, request: ApiRequest) -> dict[str, Any]:
        job = self._job(request)
        call, answer = job.call, job.answer
        reference = {"projectId": call.project, "jobId": call.job_id, "location": call.location or "US"}
        if not job.done():
            job.polls_left -= 1
            return {"kind": "bigquery#getQueryResultsResponse", "jobReference": reference, "jobComplete": False}
        if answer.error is not None:
            raise answer.error
        offset = int(request.query.get("pageToken") or request.query.get("startIndex") or 0)
        wanted = int(request.query.get("maxResults", self.max_page_rows))
        size = min(wanted, self.max_page_rows) if wanted else 0
        micros = request.query.get("formatOptions.useInt64Timestamp", "").lower() == "true"
        page = answer.rows[offset : offset + size]
        out: dict[str, Any] = {
            "kind": "bigquery#getQueryResultsResponse",
            "jobReference": reference,
            "schema": {"fields": answer.schema},
            "totalRows": str(len(answer.rows)),
            "jobComplete": True,
            "totalBytesProcessed": str(answer.total_bytes_processed),
            "cacheHit": False,
        }
        if size:
            out["rows"] = [encode_row(answer.schema, row, micros) for row in page]
            if offset + size < len(answer.rows):
                out["pageToken"] = str(offset + size)
        return out

    def _jobs_list(self, request: ApiRequest) -> dict[str, Any]:
        jobs = self.listed_jobs.get(request.params["project"], [])
        states = {s.upper() for s in request.query_all.get("stateFilter", [])}
        if states:
            jobs = [j for j in jobs if j["status"]["state"].upper() in states]
        offset = int(request.query.get("pageToken") or 0)
        size = int(request.query.get("maxResults") or 50)
        page = jobs[offset : offset + size]
        out: dict[str, Any] = {"kind": "bigquery#jobList", "etag": "fake", "jobs": [_list_item(j) for j in page]}
        if offset + size < len(jobs):
            out["nextPageToken"] = str(offset + size)
        return out


def _list_item(job: dict[str, Any]) -> dict[str, Any]:
    item = dict(job)
    item.setdefault("kind", "bigquery#job")
    item["state"] = job["status"]["state"]
    return item


def _decode_parameters(raw: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, str]]:
    values: dict[str, Any] = {}
    types: dict[str, str] = {}
    for parameter in raw:
        kind = parameter["parameterType"]
        value = parameter.get("parameterValue", {})
        if kind["type"] == "ARRAY":
            types[parameter["name"]] = f"ARRAY<{kind['arrayType']['type']}>"
            values[parameter["name"]] = [
                _scalar(kind["arrayType"]["type"], v.get("value")) for v in value.get("arrayValues", [])
            ]
        else:
            types[parameter["name"]] = kind["type"]
            values[parameter["name"]] = _scalar(kind["type"], value.get("value"))
    return values, types


def _scalar(kind: str, text: str | None) -> Any:
    if text is None:
        return None
    if kind == "TIMESTAMP":
        return datetime.fromisoformat(text.replace(" ", "T").replace("Z", "+00:00")).astimezone(UTC)
    if kind == "DATE":
        return date.fromisoformat(text)
    if kind in ("INT64", "INTEGER"):
        return int(text)
    if kind in ("FLOAT64", "FLOAT"):
        return float(text)
    if kind == "BOOL":
        return text.lower() == "true"
    return text


def encode_row(schema: list[dict[str, Any]], row: dict[str, Any], micros: bool) -> dict[str, Any]:
    return {"f": [{"v": _encode(f, row.get(f["name"]), micros)} for f in schema]}


def _encode(spec: dict[str, Any], value: Any, micros: bool) -> Any:
    if spec.get("mode") == "REPEATED":
        item = {**spec, "mode": "NULLABLE"}
        return [{"v": _encode(item, v, micros)} for v in (value or [])]
    if value is None:
        return None
    kind = spec["type"]
    if kind in ("RECORD", "STRUCT"):
        return encode_row(spec["fields"], value, micros)
    if kind == "TIMESTAMP":
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
        seconds = moment.astimezone(UTC).timestamp()
        return str(round(seconds * 1_000_000)) if micros else repr(seconds)
    if kind in ("BOOLEAN", "BOOL"):
        return "true" if value else "false"
    if kind in ("DATE", "DATETIME") and not isinstance(value, str):
        return value.isoformat()
    return str(value)
