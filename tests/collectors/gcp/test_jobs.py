"""gcp-jobs and list_running: BigQuery (real bigquery client), Vertex AI (REST), Dataproc (REST)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from spendwatch.collect import collect_source
from spendwatch.collectors.gcp.bigquery_jobs import information_schema_query
from spendwatch.collectors.gcp.jobs import GcpJobsConfig, list_running
from spendwatch.collectors.gcp.prices import BUNDLED, TIB
from spendwatch.errors import ConfigError
from spendwatch.store import Store
from tests.doubles.clock import FixedClock
from tests.doubles.google import ApiRequest, GoogleApiServer, permission_denied
from tests.doubles.google_bigquery import FakeBigQuery, QueryAnswer
from tests.doubles.google_bigquery import field_schema as f
from tests.doubles.google_workloads import FakeDataproc, FakeVertex

NOW = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
PROJECT = "analytics-warehouse"
ML = "ml-research"


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _ms(moment: datetime) -> str:
    return str(int(moment.timestamp() * 1000))


JOBS_SCHEMA = [
    f("project_id", "STRING"),
    f("job_id", "STRING"),
    f("user_email", "STRING"),
    f("job_type", "STRING"),
    f("statement_type", "STRING"),
    f("state", "STRING"),
    f("creation_time", "TIMESTAMP"),
    f("start_time", "TIMESTAMP"),
    f("end_time", "TIMESTAMP"),
    f("total_bytes_processed", "INTEGER"),
    f("total_bytes_billed", "INTEGER"),
    f("total_slot_ms", "INTEGER"),
    f("reservation_id", "STRING"),
    f("error_reason", "STRING"),
    f("labels", "RECORD", "REPEATED", [f("key", "STRING"), f("value", "STRING")]),
    f("query_hash", "STRING"),
    f("query_text", "STRING"),
]


def _schema_job(job_id: str, **values: Any) -> dict[str, Any]:
    row = {
        "project_id": PROJECT,
        "job_id": job_id,
        "user_email": "dana.kim@example.com",
        "job_type": "QUERY",
        "statement_type": "SELECT",
        "state": "DONE",
        "creation_time": NOW - timedelta(hours=5),
        "start_time": NOW - timedelta(hours=5),
        "end_time": NOW - timedelta(hours=4),
        "total_bytes_processed": 0,
        "total_bytes_billed": 0,
        "total_slot_ms": 0,
        "reservation_id": None,
        "error_reason": None,
        "labels": [],
        "query_hash": "ab" * 32,
        "query_text": "SELECT 1",
    }
    row.update(values)
    return row


def _running_bq_job(
    job_id: str, *, estimated: int, slot_ms: int, labels: dict[str, str] | None = None
) -> dict[str, Any]:
    started = NOW - timedelta(minutes=30)
    return {
        "id": f"{PROJECT}:US.{job_id}",
        "kind": "bigquery#job",
        "jobReference": {"projectId": PROJECT, "jobId": job_id, "location": "US"},
        "status": {"state": "RUNNING"},
        "configuration": {
            "jobType": "QUERY",
            "query": {"query": "SELECT * FROM a CROSS JOIN b", "useLegacySql": False},
            "labels": labels or {},
        },
        "statistics": {
            "creationTime": _ms(started),
            "startTime": _ms(started),
            "query": {"estimatedBytesProcessed": str(estimated), "totalSlotMs": str(slot_ms)},
        },
        "user_email": "dana.kim@example.com",
    }


def _config(endpoint: str, **overrides: Any) -> GcpJobsConfig:
    values: dict[str, Any] = {
        "name": "gcp-jobs",
        "gcp": {
            "project": PROJECT,
            "anonymous": True,
            "endpoints": {"bigquery": endpoint, "aiplatform": endpoint, "dataproc": endpoint},
        },
        "projects": [PROJECT],
        "retry": {"initial": "0.01s", "maximum": "0.05s", "deadline": "60s"},
    }
    values.update(overrides)
    return GcpJobsConfig.model_validate(values)


@pytest.fixture
def store(tmp_path: Path, clock: FixedClock) -> Store:
    return Store(tmp_path / "store.duckdb", clock=clock)


@pytest.fixture
def bq(google_api: GoogleApiServer) -> FakeBigQuery:
    fake = FakeBigQuery(google_api)
    fake.on_query(
        lambda call: QueryAnswer(
            JOBS_SCHEMA,
            [
                _schema_job("bquxjob_ondemand", total_bytes_billed=2 * TIB, labels=[{"key": "owner", "value": "erin"}]),
                _schema_job("bquxjob_slots", reservation_id="analytics-warehouse:US.prod", total_slot_ms=7_200_000),
                _schema_job("bquxjob_failed", error_reason="invalidQuery"),
                _schema_job("bquxjob_runaway", state="RUNNING", end_time=None, total_bytes_billed=None),
            ],
            total_bytes_billed=10 << 20,
        )
    )
    fake.add_listed_jobs(
        PROJECT,
        [
            _running_bq_job("bquxjob_runaway", estimated=1300 * TIB, slot_ms=9_000_000, labels={"team": "data"}),
            {**_running_bq_job("bquxjob_done", estimated=1, slot_ms=1), "status": {"state": "DONE"}},
        ],
    )
    return fake


def test_bigquery_jobs_from_information_schema_and_jobs_list(
    google_api: GoogleApiServer, bq: FakeBigQuery, store: Store, clock: FixedClock
) -> None:
    config = _config(google_api.endpoint, vertex={"enabled": False}, dataproc={"enabled": False}, backfill="3d")
    run = collect_source(config, store, clock)
    assert run.error is None and run.problems == [], (run.error, run.problems)
    [call] = bq.queries
    assert f"FROM `{PROJECT}`.`region-us`.INFORMATION_SCHEMA.JOBS_BY_PROJECT" in call.sql
    assert "creation_time >= @since AND creation_time < @until" in call.sql
    assert call.parameters["since"] == NOW - timedelta(days=3) and call.parameters["until"] == NOW
    assert call.parameters["query_chars"] == 1  # query_text: hash keeps the text in BigQuery
    assert call.maximum_bytes_billed == 10 << 30
    assert call.configuration["labels"]["spendwatch"] == "bigquery-jobs"
    listed = google_api.calls("GET", "/bigquery/v2/projects/{p}/jobs")
    assert {c.query.get("stateFilter") for c in listed} == {"running", "pending"}
    assert all(c.query.get("allUsers") == "True" or c.query.get("allUsers") == "true" for c in listed)

    jobs = {
        r[0]: r[1:]
        for r in store.query(
            "SELECT job_id, state, owner, owner_source, estimated_cost, projected_cost, cost_method, query_text, "
            "query_hash, \"user\" FROM jobs WHERE platform = 'bigquery'"
        )
    }
    ondemand = jobs[f"{PROJECT}:US.bquxjob_ondemand"]
    assert ondemand[:5] == ("SUCCEEDED", "erin", "label:owner", pytest.approx(12.5), pytest.approx(12.5))
    assert ondemand[6] is None and ondemand[7] == "ab" * 32  # hash only
    slots = jobs[f"{PROJECT}:US.bquxjob_slots"]
    assert slots[3] == pytest.approx(2 * 0.06) and "slot-hours" in slots[5]
    assert slots[1:3] == ("dana.kim@example.com", "user_email")
    assert jobs[f"{PROJECT}:US.bquxjob_failed"][0] == "FAILED"
    runaway = jobs[f"{PROJECT}:US.bquxjob_runaway"]  # jobs.list wins over INFORMATION_SCHEMA
    assert runaway[0] == "RUNNING" and runaway[3] == pytest.approx(1300 * 6.25)
    assert f"{PROJECT}:US.bquxjob_done" not in jobs  # a DONE job in jobs.list is not listed as running
    assert run.counters["gcp_bigquery_bytes_billed"] == 10 << 20


def test_query_text_modes_and_organization_scope(google_api: GoogleApiServer) -> None:
    truncate = _config(google_api.endpoint, bigquery={"query_text": "truncate", "query_text_chars": 200})
    query = information_schema_query(truncate, PROJECT)
    assert {n: v for n, _, v in query.parameters}["query_chars"] == 200
    org = _config(
        google_api.endpoint,
        bigquery={"scope": "organization", "organization_project": "org-admin-proj", "region": "eu"},
    )
    sql = information_schema_query(org, None).sql
    assert "`region-eu`.INFORMATION_SCHEMA.JOBS_BY_ORGANIZATION" in sql and "CAST(NULL AS STRING) AS query_text" in sql


def test_organization_scope_runs_in_the_organization_project(
    google_api: GoogleApiServer, bq: FakeBigQuery, store: Store, clock: FixedClock
) -> None:
    config = _config(
        google_api.endpoint,
        bigquery={"scope": "organization", "organization_project": "org-admin-proj", "include_running": False},
        vertex={"enabled": False},
        dataproc={"enabled": False},
    )
    assert collect_source(config, store, clock).error is None
    [call] = bq.queries
    assert call.project == "org-admin-proj" and "JOBS_BY_ORGANIZATION" in call.sql


def _vertex_job(
    name: str, state: str, *, started: datetime, ended: datetime | None = None, **spec: Any
) -> dict[str, Any]:
    job: dict[str, Any] = {
        "name": f"projects/{ML}/locations/us-central1/customJobs/{name}",
        "displayName": f"train-{name}",
        "jobSpec": {
            "workerPoolSpecs": [
                {
                    "machineSpec": {
                        "machineType": "n1-standard-8",
                        "acceleratorType": "NVIDIA_TESLA_T4",
                        "acceleratorCount": 1,
                    },
                    "replicaCount": "2",
                    "diskSpec": {"bootDiskType": "pd-ssd", "bootDiskSizeGb": 100},
                }
            ],
            "scheduling": {"timeout": "86400s"},
            "serviceAccount": "trainer@ml-research.iam.gserviceaccount.com",
            **spec,
        },
        "state": state,
        "createTime": _iso(started - timedelta(minutes=5)),
        "startTime": _iso(started),
        "updateTime": _iso(ended or NOW - timedelta(minutes=1)),
        "labels": {"owner": "ben-okafor"},
    }
    if ended:
        job["endTime"] = _iso(ended)
    return job


def _cluster(name: str, state: str, *, created: datetime, ttl: str | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "masterConfig": {"numInstances": 1, "machineTypeUri": "n2-standard-4"},
        "workerConfig": {
            "numInstances": 4,
            "machineTypeUri": "https://www.googleapis.com/compute/v1/projects/ml-research/zones/us-central1-a/machineTypes/n2-standard-8",
        },
        "secondaryWorkerConfig": {"numInstances": 2, "machineTypeUri": "n2-standard-8", "preemptibility": "SPOT"},
    }
    if ttl:
        config["lifecycleConfig"] = {"autoDeleteTtl": ttl}
    return {
        "_region": "us-central1",
        "projectId": ML,
        "clusterName": name,
        "clusterUuid": f"uuid-{name}",
        "config": config,
        "labels": {"team": "ml", "goog-dataproc-cluster-name": name},
        "status": {"state": state, "stateStartTime": _iso(created + timedelta(minutes=3))},
        "statusHistory": [{"state": "CREATING", "stateStartTime": _iso(created)}],
    }


def _batch(batch_id: str, state: str, *, created: datetime, **runtime: Any) -> dict[str, Any]:
    return {
        "name": f"projects/{ML}/locations/us-central1/batches/{batch_id}",
        "uuid": f"uuid-{batch_id}",
        "createTime": _iso(created),
        "state": state,
        "stateTime": _iso(created + timedelta(hours=1)),
        "creator": "cho.lee@example.com",
        "labels": {},
        "runtimeInfo": runtime,
        "environmentConfig": {"executionConfig": {"ttl": "14400s"}},
        "pysparkBatch": {"mainPythonFileUri": "gs://b/job.py"},
    }


@pytest.fixture
def workloads(google_api: GoogleApiServer) -> tuple[FakeVertex, FakeDataproc]:
    vertex, dataproc = FakeVertex(google_api), FakeDataproc(google_api)
    vertex.jobs += [
        _vertex_job("running", "JOB_STATE_RUNNING", started=NOW - timedelta(hours=3)),
        _vertex_job("done", "JOB_STATE_SUCCEEDED", started=NOW - timedelta(hours=10), ended=NOW - timedelta(hours=8)),
        _vertex_job("ancient", "JOB_STATE_SUCCEEDED", started=NOW - timedelta(days=30), ended=NOW - timedelta(days=29)),
        _vertex_job(
            "a100",
            "JOB_STATE_PENDING",
            started=NOW - timedelta(hours=1),
            workerPoolSpecs=[
                {
                    "machineSpec": {
                        "machineType": "a2-highgpu-1g",
                        "acceleratorType": "NVIDIA_TESLA_A100",
                        "acceleratorCount": 1,
                    },
                    "replicaCount": "1",
                }
            ],
        ),
    ]
    dataproc.clusters += [
        _cluster("etl", "RUNNING", created=NOW - timedelta(hours=5), ttl="28800s"),
        _cluster("stopped", "STOPPED", created=NOW - timedelta(hours=30)),
    ]
    dataproc.batches += [
        _batch("spark-live", "RUNNING", created=NOW - timedelta(hours=2), currentUsage={"milliDcu": "12000"}),
        _batch(
            "spark-done",
            "SUCCEEDED",
            created=NOW - timedelta(hours=20),
            approximateUsage={"milliDcuSeconds": "36000000"},
        ),
    ]
    return vertex, dataproc


def _n1_8() -> float:
    return 8 * 0.031611 + 30 * 0.004237


def test_vertex_and_dataproc_jobs_with_estimates(
    google_api: GoogleApiServer, workloads: Any, store: Store, clock: FixedClock
) -> None:
    config = _config(google_api.endpoint, projects=[ML], bigquery={"enabled": False}, backfill="3d")
    run = collect_source(config, store, clock)
    assert run.error is None and run.problems == [], (run.error, run.problems)
    rows = {
        r[0]: r[1:]
        for r in store.query(
            "SELECT job_id, platform, state, owner, owner_source, estimated_cost, projected_cost, instance_count, "
            "max_runtime_seconds, instance_type FROM jobs"
        )
    }
    running = rows[f"projects/{ML}/locations/us-central1/customJobs/running"]
    hourly = 2 * (_n1_8() + 0.35) * 1.15
    assert running[:4] == ("vertex", "RUNNING", "ben-okafor", "label:owner")
    assert running[4] == pytest.approx(hourly * 3) and running[5] == pytest.approx(hourly * 24)
    assert running[6:8] == (2, 86400)
    assert rows[f"projects/{ML}/locations/us-central1/customJobs/done"][4] == pytest.approx(hourly * 2)
    assert f"projects/{ML}/locations/us-central1/customJobs/ancient" not in rows  # before the backfill window
    a100 = rows[f"projects/{ML}/locations/us-central1/customJobs/a100"]
    assert a100[4] == pytest.approx(BUNDLED.machine_hour["a2-highgpu-1g"] * 1.15)  # GPU not counted twice

    etl = rows[f"projects/{ML}/regions/us-central1/clusters/etl/uuid-etl"]
    n2_4, n2_8 = 4 * 0.031611 + 16 * 0.004237, 8 * 0.031611 + 32 * 0.004237
    cluster_hourly = n2_4 + 4 * n2_8 + 2 * n2_8 * 0.3 + (4 + 4 * 8 + 2 * 8) * 0.01
    assert etl[:4] == ("dataproc", "RUNNING", None, None)
    assert etl[4] == pytest.approx(cluster_hourly * 5) and etl[5] == pytest.approx(cluster_hourly * 8)
    assert etl[6:] == (7, 28800, "n2-standard-4,n2-standard-8")
    stopped = rows[f"projects/{ML}/regions/us-central1/clusters/stopped/uuid-stopped"]
    assert stopped[1] == "STOPPED" and stopped[4] == pytest.approx(cluster_hourly * 0.05)

    live = rows[f"projects/{ML}/locations/us-central1/batches/spark-live"]
    assert live[:4] == ("dataproc", "RUNNING", "cho.lee@example.com", "creator")
    assert live[4] == pytest.approx(12 * 0.06 * 2) and live[5] == pytest.approx(12 * 0.06 * 4)
    done = rows[f"projects/{ML}/locations/us-central1/batches/spark-done"]
    assert done[1] == "SUCCEEDED" and done[4] == pytest.approx(10 * 0.06)


def test_list_running_is_cheap_and_only_running(
    google_api: GoogleApiServer, bq: FakeBigQuery, workloads: Any, clock: FixedClock
) -> None:
    config = _config(google_api.endpoint, projects=[PROJECT, ML])
    table = list_running(config, clock=clock)
    assert bq.queries == []  # no INFORMATION_SCHEMA query: nothing billed
    got = sorted(
        zip(
            table.column("platform").to_pylist(),
            table.column("job_id").to_pylist(),
            table.column("state").to_pylist(),
            strict=True,
        )
    )
    assert got == [
        ("bigquery", f"{PROJECT}:US.bquxjob_runaway", "RUNNING"),
        ("dataproc", f"projects/{ML}/locations/us-central1/batches/spark-live", "RUNNING"),
        ("dataproc", f"projects/{ML}/regions/us-central1/clusters/etl/uuid-etl", "RUNNING"),
        ("vertex", f"projects/{ML}/locations/us-central1/customJobs/a100", "PENDING"),
        ("vertex", f"projects/{ML}/locations/us-central1/customJobs/running", "RUNNING"),
    ]
    assert all(c is not None for c in table.column("estimated_cost").to_pylist())
    filters = [c.query.get("filter") for c in google_api.calls("GET", "/v1/projects/{p}/regions/{r}/clusters")]
    assert set(filters) == {"status.state = ACTIVE"}


def test_one_platform_denied_does_not_hide_the_others(
    google_api: GoogleApiServer, workloads: Any, store: Store, clock: FixedClock
) -> None:
    def deny(request: ApiRequest) -> None:
        raise permission_denied("aiplatform.customJobs.list", f"projects/{ML}/locations/us-central1")

    google_api.add_route("GET", "/v1/projects/{project}/locations/{region}/customJobs", deny)
    run = collect_source(_config(google_api.endpoint, projects=[ML], bigquery={"enabled": False}), store, clock)
    assert run.error is None
    [problem] = run.problems
    assert "need aiplatform.customJobs.list on projects/ml-research/locations/us-central1" in problem
    assert store.query("SELECT count(*) FROM jobs WHERE platform = 'dataproc'") == [(4,)]

    with pytest.raises(Exception, match=r"need aiplatform\.customJobs\.list"):
        list_running(
            _config(google_api.endpoint, projects=[ML], bigquery={"enabled": False}, dataproc={"enabled": False}),
            clock=clock,
        )


def test_dataproc_5xx_is_retried(google_api: GoogleApiServer, workloads: Any, store: Store, clock: FixedClock) -> None:
    google_api.fail("GET", "/v1/projects/{p}/regions/{r}/clusters", 503, times=2)
    run = collect_source(
        _config(google_api.endpoint, projects=[ML], bigquery={"enabled": False}, vertex={"enabled": False}),
        store,
        clock,
    )
    assert run.error is None and run.problems == []
    assert len(google_api.calls("GET", "/v1/projects/{p}/regions/{r}/clusters")) == 3


def test_vertex_5xx_is_retried(google_api: GoogleApiServer, workloads: Any, clock: FixedClock) -> None:
    google_api.fail("GET", "/v1/projects/{p}/locations/{r}/customJobs", 500, times=1)
    google_api.fail("GET", "/v1/projects/{p}/locations/{r}/customJobs", 429, times=1)
    config = _config(google_api.endpoint, projects=[ML], bigquery={"enabled": False}, dataproc={"enabled": False})
    table = list_running(config, clock=clock)
    assert table.num_rows == 2
    assert len(google_api.calls("GET", "/v1/projects/{p}/locations/{r}/customJobs")) == 3


def test_projects_default_to_billing_enabled_projects_in_the_store(
    google_api: GoogleApiServer, workloads: Any, store: Store, clock: FixedClock
) -> None:
    config = _config(google_api.endpoint, projects=[], bigquery={"enabled": False})
    run = collect_source(config, store, clock)
    assert run.error is not None and "no projects to read" in run.error
    with store.transaction() as con:
        con.execute(
            "INSERT INTO gcp_projects VALUES ('accounts', ?, 'X', true, ?), ('accounts', 'off-proj', NULL, false, ?)",
            [ML, NOW, NOW],
        )
    run = collect_source(config, store, clock)
    assert run.error is None
    assert {c.params["p"] for c in google_api.calls("GET", "/v1/projects/{p}/regions/{r}/clusters")} == {ML}
    with pytest.raises(ConfigError, match="no projects to read"):
        list_running(config, clock=clock)


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"projects": ["Not_A_Project"]}, "is not a Google Cloud project id"),
        ({"regions": []}, "list at least one region"),
        ({"bigquery": {"region": "moon base"}}, "is not a Google Cloud region"),
        ({"bigquery": {"query_text": "everything"}}, "Input should be"),
        ({"prices": {"gpu_hour": {"nvidia-l4": "cheap"}}}, "valid number"),
        ({"prices": {"vertex_training_markup": 0.5}}, "greater than or equal"),
    ],
)
def test_bad_config_is_refused(overrides: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        _config("http://127.0.0.1:1", **overrides)


def test_price_overrides_from_config_win(
    google_api: GoogleApiServer, workloads: Any, store: Store, clock: FixedClock
) -> None:
    config = _config(
        google_api.endpoint,
        projects=[ML],
        bigquery={"enabled": False},
        dataproc={"enabled": False},
        prices={"gpu_hour": {"nvidia-tesla-t4": 1.0}, "vertex_training_markup": 1.0},
    )
    assert collect_source(config, store, clock).error is None
    [(cost,)] = store.query("SELECT estimated_cost FROM jobs WHERE job_id LIKE '%customJobs/running'")
    assert cost == pytest.approx(2 * (_n1_8() + 1.0) * 3)


def test_information_schema_sql_is_parameterised(google_api: GoogleApiServer) -> None:
    call_sql = information_schema_query(_config(google_api.endpoint), PROJECT).sql
    assert "@since" in call_sql and "@until" in call_sql and "dana" not in call_sql
