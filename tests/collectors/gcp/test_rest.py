"""spendwatch.gcp_rest: Google REST calls through a real AuthorizedSession against the local fake Google API."""

from __future__ import annotations

from typing import Any

import pytest
from google.api_core import exceptions
from google.auth.credentials import AnonymousCredentials

from spendwatch.connections import GcpConnection
from spendwatch.gcp_rest import GoogleRest, authorized_session, base_url, field, number, read_retry
from tests.doubles.google import ApiError, ApiRequest, GoogleApiServer, google_api  # noqa: F401  (fixture)
from tests.doubles.google_billing import page_items

CLUSTERS = "/v1/projects/{project}/regions/{region}/clusters"


def _rest(server: GoogleApiServer, retry: Any = None) -> GoogleRest:
    return GoogleRest(authorized_session(AnonymousCredentials()), server.endpoint, retry=retry)


def test_pages_follow_the_next_page_token(google_api: GoogleApiServer) -> None:  # noqa: F811
    clusters = [{"clusterName": f"c{i}"} for i in range(7)]
    google_api.add_route("GET", CLUSTERS, lambda request: page_items(clusters, request, "clusters"))
    pages: list[int] = []
    found = list(
        _rest(google_api).pages(
            "v1/projects/p/regions/r/clusters", "clusters", {"pageSize": "3"}, page=lambda: pages.append(1)
        )
    )
    assert [c["clusterName"] for c in found] == [f"c{i}" for i in range(7)]
    calls = google_api.calls("GET", CLUSTERS)
    assert [c.query.get("pageToken") for c in calls] == [None, "3", "6"]
    assert all(c.query["pageSize"] == "3" for c in calls) and len(pages) == 3


def test_errors_are_the_client_libraries_exceptions(google_api: GoogleApiServer) -> None:  # noqa: F811
    @google_api.route("GET", "/compute/v1/projects/{project}/zones/{zone}/instances/{name}")
    def instance(request: ApiRequest) -> dict[str, Any]:
        if request.params["name"] == "locked":
            raise ApiError(403, "Required 'compute.instances.get' permission", reason="forbidden")
        raise ApiError(404, "The resource 'gone' was not found")

    rest = _rest(google_api)
    with pytest.raises(exceptions.NotFound, match="was not found"):
        rest.get("compute/v1/projects/p/zones/z/instances/gone")
    with pytest.raises(exceptions.Forbidden, match=r"compute\.instances\.get"):
        rest.get("compute/v1/projects/p/zones/z/instances/locked")


def test_reads_are_retried_and_changes_are_sent_once(google_api: GoogleApiServer) -> None:  # noqa: F811
    path = "/compute/v1/projects/{project}/zones/{zone}/instances/{name}"
    google_api.add_route("GET", path, lambda request: {"status": "RUNNING"})
    google_api.add_route("POST", path + "/stop", lambda request: {"name": "op-1"})
    rest = _rest(google_api, retry=read_retry(deadline=60.0))

    google_api.fail("GET", path, status=503, times=2)
    assert rest.get("compute/v1/projects/p/zones/z/instances/vm")["status"] == "RUNNING"
    assert len(google_api.calls("GET", path)) == 3

    google_api.fail("POST", path + "/stop", status=503, times=1)
    with pytest.raises(exceptions.ServiceUnavailable):
        rest.post("compute/v1/projects/p/zones/z/instances/vm/stop")
    assert len(google_api.calls("POST", path + "/stop")) == 1


def test_post_and_put_send_json_bodies(google_api: GoogleApiServer) -> None:  # noqa: F811
    seen: list[Any] = []
    google_api.add_route("POST", "/v1/{name:path}:setSize", lambda request: seen.append(request.json) or {})
    google_api.add_route("PUT", "/v1/projects/{project}/billingInfo", lambda request: seen.append(request.json) or {})
    rest = _rest(google_api)
    assert rest.post("v1/projects/p/locations/l/clusters/c/nodePools/n:setSize", {"nodeCount": 0}) == {}
    rest.put("v1/projects/p/billingInfo", {"billingAccountName": ""})
    assert seen == [{"nodeCount": 0}, {"billingAccountName": ""}]


def test_base_url_override_default_and_bare_host() -> None:
    plain = GcpConnection()
    assert base_url(plain, "compute") == "https://compute.googleapis.com"
    assert base_url(plain, "dataproc", "europe-west1") == "https://europe-west1-dataproc.googleapis.com"
    local = GcpConnection(endpoints={"dataproc": "http://127.0.0.1:9/", "compute": "private.example:443"})
    assert base_url(local, "dataproc", "europe-west1") == "http://127.0.0.1:9"
    assert base_url(local, "compute") == "https://private.example:443"


def test_json_readers_treat_absent_fields_as_defaults() -> None:
    cluster = {"status": {"state": "RUNNING"}, "config": {"workerConfig": {"numInstances": 2}}}
    assert field(cluster, "status", "state") == "RUNNING"
    assert field(cluster, "config", "masterConfig", "numInstances") is None
    assert field(cluster, "status", "state", "deeper") is None
    assert number(field(cluster, "config", "workerConfig", "numInstances")) == 2
    assert number("9007199254740993") == 9007199254740993  # int64 arrives as a string
    assert number(None) == 0
