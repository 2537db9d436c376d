"""deploy/gcp/collector-role.yaml grants exactly what the GCP collectors call, and nothing more.

Every GCP source runs once against the fake Google server with every platform switched on; each
request it made is mapped to the API method it is, and each method to its IAM permissions
(``gcp_common.PERMISSIONS``). A request no mapping knows fails the test (a new API call needs its
permission written down), and the role must equal the union of the permissions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from spendwatch.collect import collect_source
from spendwatch.collectors.gcp.common import PERMISSIONS
from spendwatch.collectors.gcp.jobs import list_running
from spendwatch.store import Store
from tests.collectors.gcp.export_fixtures import AGGREGATE_SCHEMA, STANDARD_SCHEMA, TABLE, export_config
from tests.collectors.gcp.test_billing_accounts import _config as accounts_config
from tests.collectors.gcp.test_jobs import JOBS_SCHEMA, ML, PROJECT, _batch, _cluster, _running_bq_job, _vertex_job
from tests.collectors.gcp.test_jobs import _config as jobs_config
from tests.doubles.clock import FixedClock
from tests.doubles.google import GoogleApiServer, compile_pattern
from tests.doubles.google_bigquery import FakeBigQuery, QueryAnswer, QueryCall
from tests.doubles.google_billing import FakeCloudBilling, sku
from tests.doubles.google_workloads import FakeDataproc, FakeVertex

ROLE = Path(__file__).resolve().parents[3] / "deploy" / "gcp" / "collector-role.yaml"

# REST route → the API method(s) it is, in PERMISSIONS' names.
ROUTES = {
    ("GET", "/bigquery/v2/projects/{p}/datasets/{d}/tables/{t}"): ["bigquery.tables.get"],
    ("POST", "/bigquery/v2/projects/{p}/jobs"): ["bigquery.query"],
    ("GET", "/bigquery/v2/projects/{p}/jobs/{j}"): ["bigquery.jobs.get"],
    ("GET", "/bigquery/v2/projects/{p}/queries/{j}"): ["bigquery.jobs.getQueryResults"],
    ("GET", "/bigquery/v2/projects/{p}/jobs"): ["bigquery.jobs.list.all_users"],
    ("GET", "/v1/billingAccounts"): ["cloudbilling.billingAccounts.list"],
    ("GET", "/v1/billingAccounts/{a}/projects"): ["cloudbilling.billingAccounts.projects.list"],
    ("GET", "/v1/services/{s}/skus"): ["cloudbilling.services.skus.list"],
    ("GET", "/v1/projects/{p}/locations/{r}/customJobs"): ["aiplatform.customJobs.list"],
    ("GET", "/v1/projects/{p}/regions/{r}/clusters"): ["dataproc.clusters.list"],
    ("GET", "/v1/projects/{p}/locations/{r}/batches"): ["dataproc.batches.list"],
}


def _methods_called(server: GoogleApiServer, queries: list[QueryCall]) -> set[str]:
    methods: set[str] = set()
    for request in server.requests:
        matched = [
            names
            for (verb, pattern), names in ROUTES.items()
            if verb == request.method and compile_pattern(pattern).match(request.path)
        ]
        assert matched, f"no permission mapping for {request.method} {request.path}: add it to ROUTES and PERMISSIONS"
        methods.update(matched[0])
    for query in queries:
        if "JOBS_BY_PROJECT" in query.sql:
            methods.add("bigquery.information_schema.jobs_by_project")
        if "JOBS_BY_ORGANIZATION" in query.sql:
            methods.add("bigquery.information_schema.jobs_by_organization")
    return methods


def _everything(google_api: GoogleApiServer) -> FakeBigQuery:
    bq = FakeBigQuery(google_api)
    bq.add_table(TABLE, STANDARD_SCHEMA)

    def answer(call: QueryCall) -> QueryAnswer:
        # A query that is still running when inserted makes the client poll it with jobs.get.
        return QueryAnswer(
            JOBS_SCHEMA if "INFORMATION_SCHEMA" in call.sql else AGGREGATE_SCHEMA, [], polls_before_done=2
        )

    bq.on_query(answer)
    bq.add_listed_jobs(PROJECT, [_running_bq_job("bquxjob_1", estimated=1, slot_ms=1)])
    billing = FakeCloudBilling(google_api)
    billing.add_account("0A1B2C-3D4E5F-6A7B8C", "Main", projects={PROJECT: True, ML: True})
    billing.skus["6F81-5844-456A"] = [sku("A1", "N2 Instance Core running in Americas", 0.04, regions=["us-central1"])]
    from tests.collectors.gcp.test_jobs import NOW

    vertex, dataproc = FakeVertex(google_api), FakeDataproc(google_api)
    vertex.jobs.append(_vertex_job("x", "JOB_STATE_RUNNING", started=NOW))
    dataproc.clusters.append(_cluster("c", "RUNNING", created=NOW))
    dataproc.batches.append(_batch("b", "RUNNING", created=NOW))
    return bq


def test_the_role_is_exactly_what_the_collectors_call(
    google_api: GoogleApiServer, tmp_path: Path, clock: FixedClock
) -> None:
    bq = _everything(google_api)
    store = Store(tmp_path / "store.duckdb", clock=clock)
    endpoint = google_api.endpoint
    configs: list[Any] = [
        accounts_config(endpoint),
        export_config(endpoint),
        jobs_config(endpoint, projects=[PROJECT, ML]),
        jobs_config(endpoint, name="org-jobs", bigquery={"scope": "organization", "organization_project": PROJECT}),
    ]
    for config in configs:
        run = collect_source(config, store, clock)
        assert run.error is None and run.problems == [], (config.name, run.error, run.problems)
    list_running(jobs_config(endpoint, projects=[PROJECT, ML]), clock=clock)

    called = _methods_called(google_api, bq.queries)
    assert called == set(PERMISSIONS)  # every mapped method is exercised
    needed = {permission for method in called for permission in PERMISSIONS[method]}
    role = yaml.safe_load(ROLE.read_text())
    granted = set(role["includedPermissions"])
    assert needed - granted == set(), "the collector role lacks permissions the code needs"
    assert granted - needed == set(), "the collector role grants permissions no collector call needs"
    assert role["stage"] == "GA" and role["title"]


def test_an_unmapped_call_fails_the_check(google_api: GoogleApiServer) -> None:
    google_api.add_route("GET", "/v1/projects/{p}/somethingNew", lambda request: {})
    import urllib.request

    with urllib.request.urlopen(f"{google_api.endpoint}/v1/projects/p/somethingNew") as answer:
        answer.read()
    try:
        _methods_called(google_api, [])
    except AssertionError as exc:
        assert "no permission mapping for GET /v1/projects/p/somethingNew" in str(exc)
    else:
        raise AssertionError("an API call without a permission mapping went unnoticed")
