"""A loopback HTTP proxy in front of moto that answers chosen requests with AWS throttling errors.

Point a client's ``endpoint_url`` at ``FaultProxy.endpoint_url``: requests go on to moto unchanged,
except those a rule picks, which get the error AWS itself sends (S3's ``503 SlowDown`` XML, or a
JSON-protocol ``400 ThrottlingException``). Every request is recorded with botocore's
``amz-sdk-request`` header (``attempt=2; max=3``), so a test can tell botocore's own retries from
spendwatch's.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.doubles.waits import PATIENCE

S3_SLOW_DOWN = (
    503,
    {"Content-Type": "application/xml"},
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message><RequestId>FAULT</RequestId></Error>",
)
JSON_THROTTLING = (
    400,
    {"Content-Type": "application/x-amz-json-1.1", "x-amzn-ErrorType": "ThrottlingException"},
    b'{"__type": "ThrottlingException", "message": "Rate exceeded"}',
)


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    target: str  # X-Amz-Target of JSON-protocol calls ("AWSInsightsIndexService.GetCostAndUsage")
    attempt: int  # from amz-sdk-request
    status: int
    action: str = ""  # Action of query-protocol calls (EC2, RDS …: "StopInstances"), from the form body


@dataclass
class Rule:
    matches: Callable[[str, str, str], bool]  # (method, path, target)
    answer: tuple[int, dict[str, str], bytes]
    times: int  # how many matching requests get the error (then they pass)
    used: int = 0


@dataclass
class FaultProxy:
    upstream: str
    seen: list[Seen] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        host, port = self._server.server_address[:2]
        self.endpoint_url = f"http://{host}:{port}"

    def fail(
        self, matches: Callable[[str, str, str], bool], answer: tuple[int, dict[str, str], bytes], times: int
    ) -> None:
        self.rules.append(Rule(matches, answer, times))

    def attempts(self, matches: Callable[[str, str, str], bool]) -> list[tuple[int, int]]:
        """(botocore attempt number, status) of every recorded request ``matches`` picks."""
        return [(s.attempt, s.status) for s in self.seen if matches(s.method, s.path, s.target)]

    def answer_for(self, method: str, path: str, target: str) -> tuple[int, dict[str, str], bytes] | None:
        with self._lock:
            for rule in self.rules:
                if rule.used < rule.times and rule.matches(method, path, target):
                    rule.used += 1
                    return rule.answer
        return None

    def record(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    upstream = urlsplit(proxy.upstream)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_: Any) -> None:
            pass

        def _relay(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            target = self.headers.get("X-Amz-Target", "")
            attempt = _attempt(self.headers.get("amz-sdk-request", ""))
            fault = proxy.answer_for(self.command, self.path, target)
            if fault is not None:
                status, headers, payload = fault
            else:
                status, headers, payload = _forward(upstream.netloc, self.command, self.path, dict(self.headers), body)
            proxy.record(Seen(self.command, self.path, target, attempt, status, _action(body)))
            self.send_response(status)
            for name, value in headers.items():
                if name.lower() not in {"content-length", "transfer-encoding", "connection", "server", "date"}:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

    return Handler


def _forward(
    netloc: str, method: str, path: str, headers: dict[str, str], body: bytes
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection(netloc, timeout=PATIENCE)
    try:
        headers = {k: v for k, v in headers.items() if k.lower() not in {"host", "connection"}}
        connection.request(method, path, body=body or None, headers={**headers, "Host": netloc})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def _action(body: bytes) -> str:
    if not body.startswith(b"Action="):
        return ""
    return parse_qs(body.decode(errors="replace")).get("Action", [""])[0]


def _attempt(header: str) -> int:
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        if name == "attempt" and value.isdigit():
            return int(value)
    return 0
