"""Google Cloud REST APIs called directly, through google-auth's ``AuthorizedSession``.

Compute Engine, GKE and Dataproc are reached for a handful of calls (get an instance, stop it, read a
node pool, list clusters …). Their Python clients (google-cloud-compute, -container, -dataproc) would
add ~90 MB of generated code to every install for those few calls, so spendwatch sends the same REST
requests itself — the JSON resources are stable (v1) and documented, and the Vertex AI and Resource
Manager calls already worked this way.

``GoogleRest`` is one API at one base URL (``https://compute.googleapis.com``, a regional Dataproc
endpoint, or the configured ``endpoints`` override: a private endpoint, or a local server in tests).
The session is injectable; an HTTP error is raised as the ``google.api_core.exceptions`` class the
client libraries raise (``NotFound``, ``Forbidden``, ``TooManyRequests`` …), so retry predicates and
error messages treat both paths alike. Resources come back as their JSON objects (camelCase keys,
enums as names, int64 as strings, absent when default): readers use ``field``/``number`` below.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from spendwatch.connections import GcpConnection, gcp_credentials

DEFAULT_BASES = {
    "compute": "https://compute.googleapis.com",
    "container": "https://container.googleapis.com",
    "aiplatform": "https://{region}-aiplatform.googleapis.com",
    "dataproc": "https://{region}-dataproc.googleapis.com",
    "cloudresourcemanager": "https://cloudresourcemanager.googleapis.com",
}


def base_url(connection: GcpConnection, api: str, region: str = "") -> str:
    """The API's base URL: the configured ``endpoints`` override or Google's (regional) endpoint."""
    configured = connection.endpoints.get(api)
    base = configured or DEFAULT_BASES[api].format(region=region)
    if "://" not in base:  # a bare host (``europe-west1-dataproc.googleapis.com:443``), as client_options take
        base = f"https://{base}"
    return base.rstrip("/")


def authorized_session(credentials: Any) -> Any:
    """A ``requests`` session that signs every request with ``credentials`` (refreshing them as needed)."""
    from google.auth.transport.requests import AuthorizedSession

    return AuthorizedSession(credentials)


def session_for(connection: GcpConnection) -> Any:
    return authorized_session(gcp_credentials(connection))


class GoogleRest:
    """JSON requests to one Google REST API; errors raise ``google.api_core.exceptions``.

    ``retry`` (a ``google.api_core.retry.Retry``) wraps each GET: reads are safe to repeat. Calls
    that change something are sent once — repeating a stop could act twice, and the kill switch
    journals each attempt itself.
    """

    def __init__(self, session: Any, base: str, *, timeout: float = 60.0, retry: Any = None) -> None:
        self.session = session
        self.base = base.rstrip("/")
        self.timeout = timeout
        self.retry = retry

    def url(self, path: str) -> str:
        return f"{self.base}/{path.lstrip('/')}"

    def get(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        def once() -> dict[str, Any]:
            return self._send("GET", path, params=params)

        return self.retry(once)() if self.retry is not None else once()

    def post(self, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return self._send("POST", path, body=dict(body or {}))

    def put(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self._send("PUT", path, body=dict(body))

    def pages(
        self,
        path: str,
        items: str,
        params: Mapping[str, str] | None = None,
        *,
        page: Callable[[], None] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every item of a list call, following ``nextPageToken``; ``page()`` runs before each request."""
        query = dict(params or {})
        while True:
            if page is not None:
                page()
            body = self.get(path, query)
            found = body.get(items) or []
            yield from (item for item in found if isinstance(item, dict))
            token = body.get("nextPageToken")
            if not token:
                return
            query["pageToken"] = str(token)

    def _send(
        self, method: str, path: str, *, params: Mapping[str, str] | None = None, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        from google.api_core import exceptions

        response = self.session.request(
            method, self.url(path), params=dict(params) if params else None, json=body, timeout=self.timeout
        )
        if response.status_code >= 400:
            raise exceptions.from_http_response(response)
        if not response.content:
            return {}
        try:
            answer = response.json()
        except ValueError as exc:
            raise exceptions.from_http_status(
                response.status_code, f"{method} {path}: the answer is not JSON ({exc})"
            ) from exc
        return answer if isinstance(answer, dict) else {}


def field(resource: Mapping[str, Any] | None, *path: str) -> Any:
    """``resource[a][b]…`` with absent (default-valued) fields as None, as proto3 JSON leaves them out."""
    value: Any = resource
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def number(value: Any) -> int:
    """An integer field: int32 arrives as a JSON number, int64 as a string, a default as nothing."""
    if value is None or value == "":
        return 0
    return int(value)


def read_retry(deadline: float = 30.0) -> Any:
    """Retry for reads on 429, 5xx and dropped connections, as the client libraries' defaults do."""
    import requests
    from google.api_core import exceptions, retry

    transient = retry.if_exception_type(
        exceptions.TooManyRequests,
        exceptions.InternalServerError,
        exceptions.BadGateway,
        exceptions.ServiceUnavailable,
        exceptions.GatewayTimeout,
        requests.ConnectionError,
        requests.Timeout,
    )
    return retry.Retry(predicate=transient, initial=0.5, maximum=5.0, multiplier=2.0, timeout=deadline)
