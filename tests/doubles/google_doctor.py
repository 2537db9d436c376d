"""The Google APIs ``spendwatch doctor`` calls, on the fake Google server (tests/doubles/google.py).

* ``POST /v1/projects/{project}:testIamPermissions`` (Cloud Resource Manager v1) and
  ``POST /v1/billingAccounts/{account}:testIamPermissions`` (Cloud Billing v1): answer the subset of
  the asked permissions granted with ``grant(resource, *permissions)``, as IAM does; an unknown
  project answers 403 like the real API ("The caller does not have permission");
* ``GET /v1/billingAccounts`` (Cloud Billing v1): the accounts added with ``add_billing_account``;
* ``POST /token``: an OAuth2 token endpoint for service-account key files whose ``token_uri``
  points here (``service_account_key`` writes such a key with a fresh RSA key pair).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.doubles.google import ApiError, ApiRequest, ApiResponse, GoogleApiServer


class FakeIamPermissions:
    def __init__(self, server: GoogleApiServer) -> None:
        self.server = server
        self.grants: dict[str, set[str]] = {}
        self.billing_accounts: list[dict[str, Any]] = []
        self.token_error: str | None = None
        server.add_route("POST", "/v1/projects/{project}:testIamPermissions", self._test_project)
        server.add_route("POST", "/v1/billingAccounts/{account}:testIamPermissions", self._test_account)
        server.add_route("GET", "/v1/billingAccounts", self._list_accounts)
        server.add_route("POST", "/token", self._token)

    def grant(self, resource: str, *permissions: str) -> None:
        """``resource`` is ``projects/P`` or ``billingAccounts/A``; an empty grant makes it exist."""
        self.grants.setdefault(resource, set()).update(permissions)

    def add_billing_account(self, account: str, *, open_: bool = True) -> None:
        self.billing_accounts.append(
            {"name": f"billingAccounts/{account}", "open": open_, "displayName": f"account {account}"}
        )

    def tested(self, resource: str) -> list[list[str]]:
        """The permission lists asked about ``resource``, in order."""
        kind, _, name = resource.partition("/")
        pattern = f"/v1/{kind}/{{id}}:testIamPermissions"
        return [c.json["permissions"] for c in self.server.calls("POST", pattern) if c.params["id"] == name]

    def _answer(self, resource: str, request: ApiRequest) -> dict[str, Any]:
        asked = request.json.get("permissions") or []
        if len(asked) > 100:
            raise ApiError(400, "The number of permissions must be at most 100.")
        if resource not in self.grants:
            raise ApiError(403, "The caller does not have permission")
        granted = [p for p in asked if p in self.grants[resource]]
        return {"permissions": granted} if granted else {}

    def _test_project(self, request: ApiRequest) -> dict[str, Any]:
        return self._answer(f"projects/{request.params['project']}", request)

    def _test_account(self, request: ApiRequest) -> dict[str, Any]:
        return self._answer(f"billingAccounts/{request.params['account']}", request)

    def _list_accounts(self, request: ApiRequest) -> dict[str, Any]:
        return {"billingAccounts": self.billing_accounts}

    def _token(self, request: ApiRequest) -> ApiResponse:
        if self.token_error:
            body = {"error": "invalid_grant", "error_description": self.token_error}
            return ApiResponse(400, body)
        return ApiResponse(200, {"access_token": "ya29.fake", "expires_in": 3600, "token_type": "Bearer"})


def service_account_key(path: Path, email: str, token_uri: str) -> Path:
    """A service-account key file with a real RSA key whose token endpoint is ``token_uri``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    document = {
        "type": "service_account",
        "project_id": email.partition("@")[2].partition(".")[0],
        "private_key_id": "0123456789abcdef",
        "private_key": pem,
        "client_email": email,
        "client_id": "1234567890",
        "token_uri": token_uri,
    }
    path.write_text(json.dumps(document))
    return path
