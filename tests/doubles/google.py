"""A fake Google API server on 127.0.0.1 that the REAL Google client libraries talk to.

Tests point a real client (``google-cloud-bigquery``, ``google-cloud-billing`` with ``transport="rest"``,
or ``google-auth``'s ``AuthorizedSession`` behind ``spendwatch.gcp_rest`` …) at ``server.endpoint`` with
``AnonymousCredentials`` and ``client_options={"api_endpoint": server.endpoint}`` (or the config's
``gcp.endpoints``). The server answers from a route table of
``method + path pattern → handler``; each test (or a service module such as
``tests/doubles/google_bigquery.py``) registers the routes it needs. Every request is recorded so a
test can assert exactly what the client sent, and errors come back in Google's JSON error shape, so
the client raises the same ``google.api_core.exceptions`` it would raise against the real API.

Usage::

    from tests.doubles.google import ApiError, ApiRequest, GoogleApiServer, google_api  # google_api: fixture

    def test_stop(google_api: GoogleApiServer) -> None:
        @google_api.route("POST", "/compute/v1/projects/{project}/zones/{zone}/instances/{name}/stop")
        def stop(request: ApiRequest) -> dict[str, object]:
            if request.params["name"] == "locked":
                raise ApiError(403, "Required 'compute.instances.stop' permission", reason="forbidden")
            return {"kind": "compute#operation", "name": "op-1", "status": "DONE"}

        google_api.fail("POST", "/compute/v1/**", status=503, times=2)   # the next two calls fail first
        ...  # call the real client with client_options={"api_endpoint": google_api.endpoint}
        [call] = google_api.calls("POST", "/compute/v1/projects/{project}/zones/{zone}/instances/{name}/stop")
        assert call.params["zone"] == "europe-west1-b"

Public API (stable — other test modules build on it):

* ``GoogleApiServer()`` — ``start()`` / ``stop()`` (also a context manager), ``endpoint``
  (``http://127.0.0.1:PORT``), ``route(method, pattern)`` decorator and ``add_route(method, pattern,
  handler)``, ``fail(method, pattern, status, times=1, message=, reason=, details=)``, ``requests``
  (every ``ApiRequest`` in arrival order), ``calls(method, pattern)`` (recorded requests matching a
  route pattern), ``reset()`` (drop routes, faults and recordings).
* Patterns: literal segments, ``{name}`` (one path segment, no ``/``), ``{name:path}`` (one or more
  segments) and ``**`` (anything). Custom verbs work as in Google's URLs:
  ``/v1/{name:path}:cancel``. When several routes match, the one registered LAST wins, so a test can
  override a service module's default route.
* Handlers take an ``ApiRequest`` (``method``, ``path``, ``params`` from the pattern, ``query``
  (first value per key), ``query_all`` (every value), ``headers``, ``body`` (bytes), ``json``
  (parsed body or ``None``)) and return a JSON-able value (status 200), an ``ApiResponse`` (any
  status / raw body), or raise ``ApiError``.
* ``ApiError(status, message, reason=None, details=None, errors=None)`` renders the body Google
  sends: ``{"error": {"code", "message", "status", "errors": [{"reason", "domain", "message"}],
  "details": [...]}}``. ``permission_denied(permission, resource)`` builds the 403 with the
  ``google.rpc.ErrorInfo`` detail (``IAM_PERMISSION_DENIED`` + metadata) that IAM-checked APIs send.
* Unmatched requests get a 404 in the same shape and are recorded, so a missing route fails loudly.
* Fixture ``google_api``: a started server per test, stopped afterwards.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

# HTTP status → google.rpc.Code name, as Google's JSON error bodies carry it.
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    412: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
# HTTP status → the legacy ``errors[].reason`` the JSON APIs (BigQuery, Compute) send.
_LEGACY_REASONS = {
    400: "invalid",
    401: "authError",
    403: "accessDenied",
    404: "notFound",
    409: "duplicate",
    429: "rateLimitExceeded",
    500: "backendError",
    502: "badGateway",
    503: "backendError",
    504: "backendError",
}


@dataclass(frozen=True)
class ApiRequest:
    """One request as the server received it."""

    method: str
    path: str
    params: dict[str, str]
    query: dict[str, str]
    query_all: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        if not self.body:
            return None
        return json.loads(self.body)


@dataclass(frozen=True)
class ApiResponse:
    """A response with an explicit status, body and headers (handlers usually just return a dict)."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None


class ApiError(Exception):
    """Raised by a handler: the server answers with Google's JSON error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        reason: str | None = None,
        details: list[dict[str, Any]] | None = None,
        errors: list[dict[str, Any]] | None = None,
        domain: str = "global",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason or _LEGACY_REASONS.get(status, "error")
        self.details = details
        self.errors = errors
        self.domain = domain

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "code": self.status,
            "message": self.message,
            "errors": self.errors
            if self.errors is not None
            else [{"message": self.message, "domain": self.domain, "reason": self.reason}],
            "status": _STATUS_NAMES.get(self.status, "UNKNOWN"),
        }
        if self.details:
            error["details"] = self.details
        return {"error": error}


def permission_denied(permission: str, resource: str, *, service: str = "googleapis.com") -> ApiError:
    """The 403 an IAM-checked Google API sends when ``permission`` is missing on ``resource``."""
    message = f"Permission '{permission}' denied on resource '{resource}' (or it may not exist)."
    return ApiError(
        403,
        message,
        reason="accessDenied",
        details=[
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "IAM_PERMISSION_DENIED",
                "domain": "iam.googleapis.com",
                "metadata": {"permission": permission, "resource": resource, "service": service},
            }
        ],
    )


Handler = Callable[[ApiRequest], Any]


@dataclass
class _Route:
    method: str
    pattern: str
    regex: re.Pattern[str]
    handler: Handler


@dataclass
class _Fault:
    method: str
    regex: re.Pattern[str]
    error: ApiError | None  # None: answer normally, after ``delay`` seconds (a slow server)
    remaining: int
    after: int = 0  # let this many matching requests through first (credentials expiring mid-run)
    query_has: str = ""  # only requests with this query parameter (e.g. pageToken: the second page on)
    delay: float = 0.0


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """``/v1/{name:path}:cancel`` → a regex with one named group per placeholder."""
    out = []
    position = 0
    for match in re.finditer(r"\{(\w+)(?::path)?\}|\*\*", pattern):
        out.append(re.escape(pattern[position : match.start()]))
        token = match.group(0)
        if token == "**":
            out.append(".*")
        elif token.endswith(":path}"):
            out.append(f"(?P<{match.group(1)}>.+?)")
        else:
            out.append(f"(?P<{match.group(1)}>[^/]+?)")
        position = match.end()
    out.append(re.escape(pattern[position:]))
    return re.compile("^" + "".join(out) + "$")


class GoogleApiServer:
    """A threaded HTTP server on 127.0.0.1 answering like a Google API from a route table."""

    def __init__(self) -> None:
        self._routes: list[_Route] = []
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self.requests: list[ApiRequest] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> GoogleApiServer:
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                server._serve(self)

            do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

            def log_message(self, format: str, *args: Any) -> None:  # silence stderr logging
                return None

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-google-api", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> GoogleApiServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the fake Google API server is not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    # -- configuration ------------------------------------------------------------------------

    def add_route(self, method: str, pattern: str, handler: Handler) -> None:
        with self._lock:
            self._routes.append(_Route(method.upper(), pattern, compile_pattern(pattern), handler))

    def route(self, method: str, pattern: str) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.add_route(method, pattern, handler)
            return handler

        return register

    def fail(
        self,
        method: str,
        pattern: str,
        status: int,
        *,
        times: int = 1,
        message: str | None = None,
        reason: str | None = None,
        details: list[dict[str, Any]] | None = None,
        after: int = 0,
        query_has: str = "",
    ) -> None:
        """Answer the next ``times`` matching requests with an error before any handler runs.

        ``after`` lets that many matching requests through first; ``query_has`` only picks requests
        carrying that query parameter (``pageToken``: every page but the first).
        """
        error = ApiError(status, message or HTTPStatus(status).phrase, reason=reason, details=details)
        with self._lock:
            self._faults.append(
                _Fault(method.upper(), compile_pattern(pattern), error, times, after=after, query_has=query_has)
            )

    def slow(self, method: str, pattern: str, seconds: float, *, times: int = 1) -> None:
        """Answer the next ``times`` matching requests normally, but only after ``seconds``."""
        with self._lock:
            self._faults.append(_Fault(method.upper(), compile_pattern(pattern), None, times, delay=seconds))

    def reset(self) -> None:
        with self._lock:
            self._routes.clear()
            self._faults.clear()
            self.requests.clear()

    def calls(self, method: str, pattern: str) -> list[ApiRequest]:
        """Recorded requests matching ``method`` and a route pattern, with that pattern's params."""
        regex = compile_pattern(pattern)
        found = []
        with self._lock:
            recorded = list(self.requests)
        for request in recorded:
            match = regex.match(request.path)
            if request.method == method.upper() and match:
                found.append(
                    ApiRequest(
                        request.method,
                        request.path,
                        {k: unquote(v) for k, v in match.groupdict().items()},
                        request.query,
                        request.query_all,
                        request.headers,
                        request.body,
                    )
                )
        return found

    # -- serving ------------------------------------------------------------------------------

    def _serve(self, http: BaseHTTPRequestHandler) -> None:
        split = urlsplit(http.path)
        length = int(http.headers.get("Content-Length") or 0)
        body = http.rfile.read(length) if length else b""
        query_all = parse_qs(split.query, keep_blank_values=True)
        request = ApiRequest(
            method=http.command,
            path=split.path,
            params={},
            query={k: v[0] for k, v in query_all.items()},
            query_all=query_all,
            headers={k.lower(): v for k, v in http.headers.items()},
            body=body,
        )
        with self._lock:
            self.requests.append(request)
        try:
            response = self._dispatch(request)
        except ApiError as exc:
            response = ApiResponse(exc.status, exc.body())
        except Exception as exc:  # a broken handler must show up in the test, not hang the client
            response = ApiResponse(500, ApiError(500, f"fake server handler crashed: {exc!r}").body())
        self._write(http, response)

    def _dispatch(self, request: ApiRequest) -> ApiResponse:
        delay = 0.0
        with self._lock:
            for fault in self._faults:
                if fault.remaining <= 0 or fault.method != request.method or not fault.regex.match(request.path):
                    continue
                if fault.query_has and fault.query_has not in request.query:
                    continue
                if fault.after > 0:
                    fault.after -= 1
                    continue
                fault.remaining -= 1
                if fault.error is not None:
                    raise fault.error
                delay = fault.delay
                break
            routes = list(reversed(self._routes))
        if delay:
            time.sleep(delay)
        for route in routes:
            match = route.regex.match(request.path)
            if route.method == request.method and match:
                params = {k: unquote(v) for k, v in match.groupdict().items()}
                bound = ApiRequest(
                    request.method,
                    request.path,
                    params,
                    request.query,
                    request.query_all,
                    request.headers,
                    request.body,
                )
                result = route.handler(bound)
                return result if isinstance(result, ApiResponse) else ApiResponse(200, result)
        raise ApiError(404, f"fake Google API: no route for {request.method} {request.path}", reason="notFound")

    @staticmethod
    def _write(http: BaseHTTPRequestHandler, response: ApiResponse) -> None:
        payload = response.raw if response.raw is not None else json.dumps(response.body).encode()
        http.send_response(response.status)
        http.send_header("Content-Type", "application/json; charset=UTF-8")
        http.send_header("Content-Length", str(len(payload)))
        for name, value in response.headers.items():
            http.send_header(name, value)
        http.end_headers()
        http.wfile.write(payload)


@pytest.fixture
def google_api() -> Iterator[GoogleApiServer]:
    """A started fake Google API server for one test (import this fixture into a conftest)."""
    with GoogleApiServer() as server:
        yield server
