"""The fake Google API server itself: routing, recording, faults and error bodies the real clients parse."""

from __future__ import annotations

import pytest
from google.api_core import exceptions as gexc
from google.auth.credentials import AnonymousCredentials
from google.cloud import billing_v1

from tests.doubles.google import ApiError, ApiRequest, GoogleApiServer, compile_pattern, permission_denied


def _billing(server: GoogleApiServer) -> billing_v1.CloudBillingClient:
    return billing_v1.CloudBillingClient(
        credentials=AnonymousCredentials(), transport="rest", client_options={"api_endpoint": server.endpoint}
    )


def test_patterns_capture_segments_paths_and_custom_verbs() -> None:
    assert compile_pattern("/v1/projects/{project}/jobs").match("/v1/projects/p1/jobs")
    assert not compile_pattern("/v1/projects/{project}/jobs").match("/v1/projects/a/b/jobs")
    match = compile_pattern("/v1/{name:path}:cancel").match("/v1/projects/p/locations/l/customJobs/7:cancel")
    assert match is not None and match["name"] == "projects/p/locations/l/customJobs/7"
    assert compile_pattern("/compute/**").match("/compute/v1/anything/at/all")


def test_real_client_reaches_a_route_and_the_request_is_recorded(google_api: GoogleApiServer) -> None:
    @google_api.route("GET", "/v1/{name:path}/billingInfo")
    def info(request: ApiRequest) -> dict[str, object]:
        return {"name": f"{request.params['name']}/billingInfo", "projectId": "p1", "billingEnabled": True}

    answer = _billing(google_api).get_project_billing_info(name="projects/p1")
    assert answer.billing_enabled is True and answer.project_id == "p1"
    [call] = google_api.calls("GET", "/v1/projects/{project}/billingInfo")
    assert call.params == {"project": "p1"}


def test_last_registered_route_wins(google_api: GoogleApiServer) -> None:
    google_api.add_route("GET", "/v1/{name:path}/billingInfo", lambda r: {"projectId": "first"})
    google_api.add_route("GET", "/v1/{name:path}/billingInfo", lambda r: {"projectId": "second"})
    assert _billing(google_api).get_project_billing_info(name="projects/x").project_id == "second"


def test_errors_come_back_as_the_clients_exceptions(google_api: GoogleApiServer) -> None:
    def deny(request: ApiRequest) -> None:
        raise permission_denied("billing.resourceAssociations.list", "projects/p1")

    google_api.add_route("GET", "/v1/{name:path}/billingInfo", deny)
    with pytest.raises(gexc.Forbidden) as caught:
        _billing(google_api).get_project_billing_info(name="projects/p1")
    assert "billing.resourceAssociations.list" in caught.value.message
    assert caught.value.reason == "IAM_PERMISSION_DENIED"
    assert caught.value.metadata == {
        "permission": "billing.resourceAssociations.list",
        "resource": "projects/p1",
        "service": "googleapis.com",
    }


def test_faults_fire_the_given_number_of_times(google_api: GoogleApiServer) -> None:
    google_api.add_route("GET", "/v1/{name:path}/billingInfo", lambda r: {"projectId": "ok"})
    google_api.fail("GET", "/v1/**", status=404, times=1, message="Project not found")
    client = _billing(google_api)
    with pytest.raises(gexc.NotFound, match="Project not found"):
        client.get_project_billing_info(name="projects/p1")
    assert client.get_project_billing_info(name="projects/p1").project_id == "ok"
    assert len(google_api.requests) == 2


def test_unrouted_requests_are_404_and_handler_crashes_are_500(google_api: GoogleApiServer) -> None:
    client = _billing(google_api)
    with pytest.raises(gexc.NotFound, match="no route"):
        client.get_project_billing_info(name="projects/p1")

    def crash(request: ApiRequest) -> None:
        raise KeyError("boom")

    google_api.add_route("GET", "/v1/{name:path}/billingInfo", crash)
    with pytest.raises(gexc.InternalServerError, match="handler crashed"):
        client.get_project_billing_info(name="projects/p1", retry=None)


def test_api_error_body_has_googles_shape() -> None:
    body = ApiError(429, "Quota exceeded").body()["error"]
    assert body["code"] == 429 and body["status"] == "RESOURCE_EXHAUSTED"
    assert body["errors"] == [{"message": "Quota exceeded", "domain": "global", "reason": "rateLimitExceeded"}]
