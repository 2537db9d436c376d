"""A local PagerDuty Events API v2 (``POST /v2/enqueue``) that checks every event against the documented schema.

The schema is written from PagerDuty's developer documentation ("Send an Alert Event", Events API v2
overview, PD-CEF): ``routing_key`` (the 32-character integration key) and ``event_action``
(trigger | acknowledge | resolve) are required; ``dedup_key`` is at most 255 characters and required
to acknowledge or resolve; a trigger needs ``payload`` with ``summary`` (at most 1024 characters),
``source`` and ``severity`` (critical | error | warning | info), and may carry ``timestamp`` (ISO
8601), ``component``, ``group``, ``class`` and ``custom_details`` (an object); ``images`` (``src``
over HTTPS), ``links`` (``href``), ``client`` and ``client_url`` are optional; a request is at most
512 KB. Anything else is refused the way PagerDuty refuses it: HTTP 400 with
``{"status": "invalid event", "message": "Event object is invalid", "errors": [...]}``.

A valid event is answered 202 ``{"status": "success", "message": "Event processed", "dedup_key": …}``
and applied to the service's alerts (trigger opens or updates, acknowledge and resolve act only on an
open alert of the same routing key, as PagerDuty documents), so a test can check where each alert stands.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jsonschema

MAX_BYTES = 512 * 1024
_TEXT = {"type": "string", "minLength": 1}
EVENT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["routing_key", "event_action"],
    "additionalProperties": False,
    "properties": {
        "routing_key": {"type": "string", "pattern": "^[A-Za-z0-9]{32}$"},
        "event_action": {"enum": ["trigger", "acknowledge", "resolve"]},
        "dedup_key": {"type": "string", "minLength": 1, "maxLength": 255},
        "payload": {
            "type": "object",
            "required": ["summary", "source", "severity"],
            "additionalProperties": False,
            "properties": {
                "summary": {"type": "string", "minLength": 1, "maxLength": 1024},
                "source": _TEXT,
                "severity": {"enum": ["critical", "error", "warning", "info"]},
                "timestamp": _TEXT,
                "component": _TEXT,
                "group": _TEXT,
                "class": _TEXT,
                "custom_details": {"type": "object"},
            },
        },
        "images": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["src"],
                "additionalProperties": False,
                "properties": {"src": {"type": "string", "pattern": "^https://"}, "href": _TEXT, "alt": _TEXT},
            },
        },
        "links": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["href"],
                "additionalProperties": False,
                "properties": {"href": _TEXT, "text": _TEXT},
            },
        },
        "client": _TEXT,
        "client_url": _TEXT,
    },
    "allOf": [
        {"if": {"properties": {"event_action": {"const": "trigger"}}}, "then": {"required": ["payload"]}},
        {
            "if": {"properties": {"event_action": {"enum": ["acknowledge", "resolve"]}}},
            "then": {"required": ["dedup_key"], "not": {"required": ["payload"]}},
        },
    ],
}
_VALIDATOR = jsonschema.Draft202012Validator(EVENT_SCHEMA)


def event_errors(raw: bytes) -> list[str]:
    """Why PagerDuty would refuse this request body (empty: it is a valid event)."""
    if len(raw) > MAX_BYTES:
        return [f"the event is {len(raw)} bytes; the limit is {MAX_BYTES}"]
    try:
        event = json.loads(raw)
    except ValueError as exc:
        return [f"not JSON: {exc}"]
    errors = [f"{'/'.join(map(str, e.absolute_path)) or '(event)'}: {e.message}" for e in _VALIDATOR.iter_errors(event)]
    stamp = event.get("payload", {}).get("timestamp") if isinstance(event, dict) else None
    if isinstance(stamp, str):
        try:
            parsed = datetime.fromisoformat(stamp)
        except ValueError:
            errors.append(f"payload/timestamp: {stamp!r} is not ISO 8601")
        else:
            if parsed.tzinfo is None:
                errors.append(f"payload/timestamp: {stamp!r} has no UTC offset")
    return errors


@dataclass
class Alert:
    dedup_key: str
    routing_key: str
    status: str  # triggered | acknowledged | resolved
    severity: str
    summary: str
    triggers: int = 1


@dataclass
class PagerDuty:
    """The server: ``events`` (every valid event, in order), ``refused`` (invalid ones, with errors), ``alerts``."""

    events: list[dict[str, Any]] = field(default_factory=list)
    refused: list[tuple[Any, list[str]]] = field(default_factory=list)
    alerts: dict[str, Alert] = field(default_factory=dict)
    fail: int | None = None  # answer this status instead (429, 503 …)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        pagerduty = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, answer = pagerduty.handle(self.path, self.headers.get("Content-Type", ""), raw)
                body = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v2/enqueue"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def handle(self, path: str, content_type: str, raw: bytes) -> tuple[int, dict[str, Any]]:
        with self.lock:
            if self.fail is not None:
                return self.fail, {"status": "throttle event", "message": "Requests for this service are throttled."}
            if path != "/v2/enqueue":
                return 404, {"status": "not found"}
            errors = event_errors(raw) if content_type.startswith("application/json") else ["not application/json"]
            if errors:
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw
                self.refused.append((body, errors))
                return 400, {"status": "invalid event", "message": "Event object is invalid", "errors": errors}
            event = json.loads(raw)
            self.events.append(event)
            return 202, {"status": "success", "message": "Event processed", "dedup_key": self._apply(event)}

    def _apply(self, event: dict[str, Any]) -> str:
        key = event.get("dedup_key") or uuid.uuid4().hex
        alert = self.alerts.get(key)
        same_service = alert is not None and alert.routing_key == event["routing_key"]
        action = event["event_action"]
        if action == "trigger":
            payload = event["payload"]
            if alert is None or alert.status == "resolved" or not same_service:
                self.alerts[key] = Alert(
                    key, event["routing_key"], "triggered", payload["severity"], payload["summary"]
                )
            else:
                alert.triggers += 1
        elif alert is not None and same_service and alert.status != "resolved":
            alert.status = "acknowledged" if action == "acknowledge" else "resolved"
        return key
