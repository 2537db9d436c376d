"""Every cloud source on its fake, with two versions of its upstream data and five ways to fail.

A scenario publishes version ``A`` or ``B`` of what the cloud holds (B restates A: other amounts,
another file, another job or project), knows the five faults — ``5xx``, ``throttling``, ``timeout``,
``page-halfway`` (a page, listing or file after the first fails), ``credentials-expire`` (the first
calls succeed, then the token is expired) — and reads back what the store holds per *unit*: a charge
period for cost sources, a platform's job records, a billing account's projects. The test checks that
after a failed run every unit is wholly A or wholly B, never a mix.

AWS goes through ``FaultProxy`` in front of moto, Google through the fake API server; retries are
real but fast (``aws_backoff`` records its pauses; Google retries back off from 10 ms; timeouts are
half a second against a server that answers after one and a half).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from spendwatch.collectors.aws.api import Backoff
from spendwatch.config import Config, parse_config
from spendwatch.daemon import DaemonContext, collect_job
from spendwatch.daemon.health import readiness
from spendwatch.store import Store
from tests.doubles.aws_ce import ce_page
from tests.doubles.aws_cur import line, parquet_bytes, put_data_export
from tests.doubles.aws_faults import FaultProxy
from tests.doubles.clock import FixedClock

NOW = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
FAULTS = ("5xx", "throttling", "timeout", "page-halfway", "credentials-expire")
SLOW = 1.5  # seconds a "timeout" fault waits; every client here gives up after 0.5 s
FOREVER = 1000  # a fault that does not clear by itself

S3_INTERNAL = (
    500,
    {"Content-Type": "application/xml"},
    b"<Error><Code>InternalError</Code><Message>We encountered an internal error.</Message></Error>",
)
S3_SLOW_DOWN = (
    503,
    {"Content-Type": "application/xml"},
    b"<Error><Code>SlowDown</Code><Message>slow</Message></Error>",
)
S3_EXPIRED = (
    400,
    {"Content-Type": "application/xml"},
    b"<Error><Code>ExpiredToken</Code><Message>The provided token has expired.</Message></Error>",
)


def json_error(status: int, code: str) -> tuple[int, dict[str, str], bytes]:
    body = json.dumps({"__type": code, "message": code}).encode()
    return status, {"Content-Type": "application/x-amz-json-1.1", "x-amzn-ErrorType": code}, body


def config_with(source: dict[str, Any]) -> Config:
    text = yaml.safe_dump({"store": {"path": "unused.duckdb"}, "sources": [source]})
    return parse_config(text, Path("/nonexistent/spendwatch.yaml"), environ={})


@dataclass
class Scenario:
    """One source on its fake cloud (subclasses fill in the cloud)."""

    name: str
    config: Config
    clients: dict[str, Any] = field(default_factory=dict)
    pauses: list[float] = field(default_factory=list)

    def publish(self, version: str) -> None:
        raise NotImplementedError

    def inject(self, fault: str) -> None:
        raise NotImplementedError

    def clear(self) -> None:
        raise NotImplementedError

    def units(self, store: Store) -> dict[str, Any]:
        raise NotImplementedError


# -- AWS ------------------------------------------------------------------------------------------


def _aws(proxy: FaultProxy) -> dict[str, Any]:
    return {"region": "us-east-1", "endpoint_url": proxy.endpoint_url, "max_attempts": 1, "timeout": "0.5s"}


def _cost_units(store: Store, source: str) -> dict[str, Any]:
    rows = store.query(
        "SELECT strftime(charge_period_start, '%Y-%m-%d') AS day, count(*), round(sum(billed_cost), 6) "
        "FROM cost_lines WHERE source = ? GROUP BY ALL ORDER BY ALL",
        [source],
    )
    return {"period": tuple(rows)} if rows else {}


class CostExplorer(Scenario):
    """One daily chunk (Nov 18–21): a usage request answered in two pages, and a charges request."""

    def __init__(self, moto: Any, proxy: FaultProxy) -> None:
        source = {"name": "ce", "type": "aws-cost-explorer", "backfill": "2d", "aws": _aws(proxy)}
        super().__init__("ce", config_with(source))
        self.moto, self.proxy = moto, proxy
        self.clients = {"aws_backoff": Backoff(attempts=2, sleep=self.pauses.append)}

    def publish(self, version: str) -> None:
        scale = 1.0 if version == "A" else 1.5
        usage = [(["111111111111", "Amazon SageMaker"], 30.0 * scale, 30.0 * scale)]
        more = [(["222222222222", "Amazon S3"], 4.0 * scale, 4.0 * scale)]
        self.moto.reset()
        self.moto.seed_cost_explorer(
            [
                ce_page([("2026-11-19", "2026-11-20", usage, False)], token="page-2"),
                ce_page([("2026-11-19", "2026-11-20", more, False)]),
                ce_page([("2026-11-19", "2026-11-20", [(["111111111111", "Tax"], 3.0 * scale, 3.0 * scale)], False)]),
            ]
        )

    def inject(self, fault: str) -> None:
        def calls(method: str, _: str, target: str) -> bool:
            return target.endswith(".GetCostAndUsage")

        if fault == "5xx":
            self.proxy.fail(calls, json_error(500, "InternalFailure"), FOREVER)
        elif fault == "throttling":
            self.proxy.fail(calls, json_error(400, "ThrottlingException"), FOREVER)
        elif fault == "timeout":
            self.proxy.fail(calls, None, FOREVER, delay=SLOW)
        elif fault == "page-halfway":
            self.proxy.fail(calls, json_error(500, "InternalFailure"), FOREVER, body_has=b"NextPageToken")
        elif fault == "credentials-expire":
            self.proxy.fail(calls, json_error(400, "ExpiredTokenException"), FOREVER, after=1)

    def clear(self) -> None:
        self.proxy.rules.clear()

    def units(self, store: Store) -> dict[str, Any]:
        return _cost_units(store, "ce")


BUCKET, PREFIX = "billing-exports", "cur/cur2"


class DataExport(Scenario):
    """November of a CUR 2.0 export: one file in A, two files in B (the second is where it fails)."""

    def __init__(self, moto: Any, proxy: FaultProxy) -> None:
        source = {
            "name": "cur",
            "type": "aws-data-export",
            "bucket": BUCKET,
            "prefix": PREFIX,
            "backfill": "30d",
            "aws": _aws(proxy),
        }
        super().__init__("cur", config_with(source))
        self.moto, self.proxy = moto, proxy
        self.clients = {"aws_backoff": Backoff(attempts=2, sleep=self.pauses.append)}

    def publish(self, version: str) -> None:
        import boto3

        s3 = boto3.client("s3", endpoint_url=self.moto.endpoint_url, region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        for item in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []):
            s3.delete_object(Bucket=BUCKET, Key=item["Key"])
        hours = [datetime(2026, 11, 3, h, tzinfo=UTC) for h in range(4)]
        if version == "A":
            files = {"a.parquet": parquet_bytes([line(h, 2.0) for h in hours])}
        else:
            files = {
                "b1.parquet": parquet_bytes([line(h, 3.0) for h in hours]),
                "b2.parquet": parquet_bytes([line(h, 5.0, resource="i-0bbb") for h in hours]),
            }
        put_data_export(s3, BUCKET, PREFIX, "2026-11", files)

    def inject(self, fault: str) -> None:
        def second_file(method: str, path: str, _: str) -> bool:
            return method == "GET" and path.split("?", maxsplit=1)[0].endswith("/b2.parquet")

        def manifest(method: str, path: str, _: str) -> bool:
            return method == "GET" and path.split("?", maxsplit=1)[0].endswith("-Manifest.json")

        def anything(method: str, path: str, _: str) -> bool:
            return True

        if fault == "5xx":
            self.proxy.fail(manifest, S3_INTERNAL, FOREVER)
        elif fault == "throttling":
            self.proxy.fail(second_file, S3_SLOW_DOWN, FOREVER)
        elif fault == "timeout":
            self.proxy.fail(second_file, None, FOREVER, delay=SLOW)
        elif fault == "page-halfway":  # the first data file arrived, the second fails
            self.proxy.fail(second_file, S3_INTERNAL, FOREVER)
        elif fault == "credentials-expire":  # the listing and the manifest work, then the token expires
            self.proxy.fail(anything, S3_EXPIRED, FOREVER, after=3)

    def clear(self) -> None:
        self.proxy.rules.clear()

    def units(self, store: Store) -> dict[str, Any]:
        return _cost_units(store, "cur")


class AwsJobs(Scenario):
    """EMR clusters (moto): two in A, a third in B; the listing asks twice (active, then ended)."""

    def __init__(self, moto: Any, proxy: FaultProxy) -> None:
        source = {
            "name": "jobs",
            "type": "aws-jobs",
            "aws": _aws(proxy),
            **{p: p == "emr" for p in ("athena", "sagemaker", "emr", "glue", "batch")},
        }
        super().__init__("jobs", config_with(source))
        self.moto, self.proxy = moto, proxy
        self.clients = {"aws_backoff": Backoff(attempts=2, sleep=self.pauses.append)}
        self.clusters = 0

    def publish(self, version: str) -> None:
        import boto3

        emr = boto3.client("emr", endpoint_url=self.moto.endpoint_url, region_name="us-east-1")
        wanted = 2 if version == "A" else 3
        if wanted < self.clusters:  # moto cannot forget one cluster: start again (ids change, names do not)
            self.moto.reset()
            self.clusters = 0
        while self.clusters < wanted:
            emr.run_job_flow(
                Name=f"etl-{self.clusters}",
                ReleaseLabel="emr-7.1.0",
                Instances={
                    "InstanceGroups": [
                        {"Name": "m", "InstanceRole": "MASTER", "InstanceType": "m5.xlarge", "InstanceCount": 1}
                    ],
                    "KeepJobFlowAliveWhenNoSteps": True,
                },
                JobFlowRole="EMR_EC2_DefaultRole",
                ServiceRole="EMR_DefaultRole",
            )
            self.clusters += 1

    def inject(self, fault: str) -> None:
        def listing(_: str, __: str, target: str) -> bool:
            return target.endswith(".ListClusters")

        def describe(_: str, __: str, target: str) -> bool:
            return target.endswith(".DescribeCluster")

        def emr(_: str, __: str, target: str) -> bool:
            return target.startswith("ElasticMapReduce.")

        if fault == "5xx":
            self.proxy.fail(listing, json_error(500, "InternalServerError"), FOREVER)
        elif fault == "throttling":
            self.proxy.fail(describe, json_error(400, "ThrottlingException"), FOREVER)
        elif fault == "timeout":
            self.proxy.fail(describe, None, FOREVER, delay=SLOW)
        elif fault == "page-halfway":  # the active clusters are listed, the ended ones fail
            self.proxy.fail(listing, json_error(500, "InternalServerError"), FOREVER, after=1)
        elif fault == "credentials-expire":
            self.proxy.fail(emr, json_error(400, "ExpiredTokenException"), FOREVER, after=2)

    def clear(self) -> None:
        self.proxy.rules.clear()

    def units(self, store: Store) -> dict[str, Any]:
        # By name: a restart of moto gives the same clusters new ids.
        rows = store.query("SELECT name, state, count(*) FROM jobs WHERE platform = 'emr' GROUP BY ALL ORDER BY ALL")
        return {"emr": tuple(rows)} if rows else {}


# -- Google ---------------------------------------------------------------------------------------

_RETRY = {"initial": "0.01s", "maximum": "0.05s", "deadline": "1.2s", "call_timeout": "0.5s"}


class BillingExport(Scenario):
    """The standard billing export: three hourly rows answered one per page."""

    def __init__(self, google: Any) -> None:
        from tests.collectors.gcp.export_fixtures import STANDARD_SCHEMA, TABLE
        from tests.doubles.google_bigquery import FakeBigQuery

        source = {
            "name": "gcp-billing",
            "type": "gcp-billing-export",
            "table": TABLE,
            "backfill": "2d",
            "gcp": {"project": "billing-proj", "anonymous": True, "endpoints": {"bigquery": google.endpoint}},
            "label_keys": ["owner"],
            "retry": _RETRY,
        }
        super().__init__("gcp-billing", config_with(source))
        self.google = google
        self.bq = FakeBigQuery(google)
        self.bq.add_table(TABLE, STANDARD_SCHEMA)
        self.bq.max_page_rows = 1
        self.version = "A"

    def publish(self, version: str) -> None:
        from tests.collectors.gcp.export_fixtures import AGGREGATE_SCHEMA
        from tests.doubles.google_bigquery import QueryAnswer

        cost = 10.0 if version == "A" else 16.0

        def answer(call: Any) -> Any:
            hour = datetime(2026, 11, 19, tzinfo=UTC)
            rows = [_export_row(hour + timedelta(hours=i), cost + i) for i in range(3)]
            return QueryAnswer(AGGREGATE_SCHEMA, rows if call.parameters["start"] <= hour else [])

        self.bq.on_query(answer)

    def inject(self, fault: str) -> None:
        results = "/bigquery/v2/projects/{p}/queries/{j}"
        if fault == "5xx":
            self.google.fail("POST", "/bigquery/v2/projects/{p}/jobs", 500, times=FOREVER, reason="backendError")
        elif fault == "throttling":
            self.google.fail("POST", "/bigquery/v2/projects/{p}/jobs", 429, times=FOREVER, reason="rateLimitExceeded")
        elif fault == "timeout":  # the query insert hangs past call_timeout
            self.google.slow("POST", "/bigquery/v2/projects/{p}/jobs", SLOW, times=FOREVER)
        elif fault == "page-halfway":
            self.google.fail("GET", results, 500, times=FOREVER, query_has="pageToken", reason="backendError")
        elif fault == "credentials-expire":
            self.google.fail("GET", results, 401, times=FOREVER, after=1, message="Request had invalid credentials.")

    def clear(self) -> None:
        self.google._faults.clear()

    def units(self, store: Store) -> dict[str, Any]:
        return _cost_units(store, "gcp-billing")


def _export_row(start: datetime, cost: float) -> dict[str, Any]:
    return {
        "period_start": start,
        "billing_account_id": "0A1B2C-3D4E5F-6A7B8C",
        "project_id": "analytics-warehouse",
        "project_name": "Analytics Warehouse",
        "service_id": "24E6-581D-38E5",
        "service_name": "BigQuery",
        "sku_id": "3362-E469-6BEF",
        "sku_description": "Analysis",
        "region_id": "us",
        "cost_type": "regular",
        "currency": "USD",
        "label_0": None,
        "cost": cost,
        "credits": 0.0,
        "list_cost": cost,
        "source_rows": 1,
    }


class GcpJobs(Scenario):
    """Running BigQuery jobs from jobs.list (ten to a page): eleven in A, twelve in B."""

    PROJECT = "analytics-warehouse"

    def __init__(self, google: Any) -> None:
        from tests.doubles.google_bigquery import FakeBigQuery

        source = {
            "name": "gcp-jobs",
            "type": "gcp-jobs",
            "gcp": {"project": self.PROJECT, "anonymous": True, "endpoints": {"bigquery": google.endpoint}},
            "projects": [self.PROJECT],
            "vertex": {"enabled": False},
            "dataproc": {"enabled": False},
            "page_size": 10,
            "retry": _RETRY,
        }
        super().__init__("gcp-jobs", config_with(source))
        self.google = google
        self.bq = FakeBigQuery(google)
        from tests.collectors.gcp.test_jobs import JOBS_SCHEMA
        from tests.doubles.google_bigquery import QueryAnswer

        self.bq.on_query(lambda call: QueryAnswer(JOBS_SCHEMA, []))  # no finished jobs: jobs.list is the subject

    def publish(self, version: str) -> None:
        count = 11 if version == "A" else 12
        self.bq.listed_jobs[self.PROJECT] = [_running_job(self.PROJECT, f"bquxjob_{i:02d}") for i in range(count)]

    def inject(self, fault: str) -> None:
        listing = "/bigquery/v2/projects/{p}/jobs"
        if fault == "5xx":
            self.google.fail("GET", listing, 503, times=FOREVER)
        elif fault == "throttling":
            self.google.fail("GET", listing, 429, times=FOREVER, reason="rateLimitExceeded")
        elif fault == "timeout":
            self.google.slow("GET", listing, SLOW, times=FOREVER)
        elif fault == "page-halfway":
            self.google.fail("GET", listing, 500, times=FOREVER, query_has="pageToken", reason="backendError")
        elif fault == "credentials-expire":
            self.google.fail("GET", listing, 401, times=FOREVER, after=1, message="Request had invalid credentials.")

    def clear(self) -> None:
        self.google._faults.clear()

    def units(self, store: Store) -> dict[str, Any]:
        rows = store.query("SELECT job_id, state FROM jobs WHERE platform = 'bigquery' ORDER BY job_id")
        return {"bigquery": tuple(rows)} if rows else {}


def _running_job(project: str, job_id: str) -> dict[str, Any]:
    started = NOW - timedelta(minutes=30)
    millis = str(int(started.timestamp() * 1000))
    return {
        "id": f"{project}:US.{job_id}",
        "kind": "bigquery#job",
        "jobReference": {"projectId": project, "jobId": job_id, "location": "US"},
        "status": {"state": "RUNNING"},
        "configuration": {"jobType": "QUERY", "query": {"query": "SELECT 1", "useLegacySql": False}},
        "statistics": {"creationTime": millis, "startTime": millis, "query": {"estimatedBytesProcessed": "1000"}},
        "user_email": "dana.kim@example.com",
    }


class BillingAccounts(Scenario):
    """One billing account whose projects come three to a page: five in A, six in B."""

    ACCOUNT = "0A1B2C-3D4E5F-6A7B8C"

    def __init__(self, google: Any) -> None:
        from tests.doubles.google_billing import FakeCloudBilling

        source = {
            "name": "gcp-accounts",
            "type": "gcp-billing-accounts",
            "gcp": {"anonymous": True, "endpoints": {"cloudbilling": google.endpoint}},
            "page_size": 3,
            "catalog": {"enabled": False},
            "retry": _RETRY,
        }
        super().__init__("gcp-accounts", config_with(source))
        self.google = google
        self.billing = FakeCloudBilling(google)
        self.published = ""

    def publish(self, version: str) -> None:
        if version == self.published:
            return
        count = 5 if version == "A" else 6
        self.billing.accounts.clear()
        self.billing.projects.clear()
        self.billing.add_account(self.ACCOUNT, "Main", projects={f"team-{i:02d}": True for i in range(count)})
        self.published = version

    def inject(self, fault: str) -> None:
        projects = "/v1/billingAccounts/{a}/projects"
        if fault == "5xx":
            self.google.fail("GET", projects, 503, times=FOREVER)
        elif fault == "throttling":
            self.google.fail("GET", projects, 429, times=FOREVER)
        elif fault == "timeout":
            self.google.slow("GET", projects, SLOW, times=FOREVER)
        elif fault == "page-halfway":
            self.google.fail("GET", projects, 500, times=FOREVER, query_has="pageToken")
        elif fault == "credentials-expire":
            self.google.fail("GET", projects, 401, times=FOREVER, after=1, message="Request had invalid credentials.")

    def clear(self) -> None:
        self.google._faults.clear()

    def units(self, store: Store) -> dict[str, Any]:
        rows = store.query("SELECT project_id, billing_enabled FROM gcp_projects ORDER BY project_id")
        return {self.ACCOUNT: tuple(rows)} if rows else {}


# -- the matrix ------------------------------------------------------------------------------------


def collect(scenario: Scenario, store: Store) -> tuple[DaemonContext, dict[str, Any]]:
    """One run of the daemon's collection job; returns its context and the run it recorded."""
    ctx = DaemonContext(scenario.config, store, FixedClock(NOW), clients={scenario.name: scenario.clients})
    collect_job(ctx, scenario.name)
    [row] = store.query(
        "SELECT status, error, detail FROM runs WHERE job = ? ORDER BY id DESC LIMIT 1", [f"collect:{scenario.name}"]
    )
    return ctx, {"status": row[0], "error": row[1], "detail": row[2]}


def run_matrix(scenario: Scenario, folder: Path) -> None:
    template = folder / "A.duckdb"  # version A, collected once; each fault starts from a copy
    scenario.publish("A")
    assert collect(scenario, Store(template, clock=FixedClock(NOW)))[1]["status"] == "ok"
    old = scenario.units(Store(template))
    clean = _copy(template, folder / "clean.duckdb")
    scenario.publish("B")
    assert collect(scenario, clean)[1]["status"] == "ok"
    expected = scenario.units(clean)
    assert old and expected and old != expected, "version B must change what is stored"

    for fault in FAULTS:
        began = time.monotonic()
        store = _copy(template, folder / f"{fault}.duckdb")
        scenario.publish("B")
        scenario.inject(fault)
        ctx, failed = collect(scenario, store)
        message = failed["error"] or str(failed["detail"])
        assert failed["status"] in ("failed", "partial"), (fault, failed)
        assert "\n" not in message, message
        during = scenario.units(store)
        for unit in set(during) | set(old) | set(expected):
            assert during.get(unit) in (old.get(unit), expected.get(unit)), f"{fault}: {unit} stored partly"
        job = f"collect:{scenario.name}"
        if failed["status"] == "failed":
            assert ctx.failures[job] == 1, "the daemon did not count the failure"

        scenario.clear()
        scenario.publish("B")
        ctx, recovered = collect(scenario, store)
        assert recovered["status"] == "ok", (fault, recovered)
        assert ctx.failures.get(job, 0) == 0
        assert scenario.units(store) == expected, f"{fault}: the next run did not converge"
        ready, detail = readiness(scenario.config, store, FixedClock(NOW))
        assert ready, detail
        seconds = time.monotonic() - began
        print(f"{scenario.name:<13} {fault:<19} {failed['status']:<8} {seconds:5.1f}s {_short(message)}")


def _copy(template: Path, target: Path) -> Store:
    shutil.copy(template, target)
    return Store(target, clock=FixedClock(NOW))


def _short(text: Any) -> str:
    value = str(text)
    return value if len(value) <= 150 else value[:147] + "..."
