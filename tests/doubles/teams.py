"""A local Teams Workflows webhook ("When a Teams webhook request is received") that checks each card.

Written from Microsoft's documentation of the Workflows webhook and the Adaptive Cards schema (1.4,
the elements spendwatch uses): the body is ``{"type": "message", "attachments": [{"contentType":
"application/vnd.microsoft.card.adaptive", "contentUrl": null, "content": <AdaptiveCard>}]}``; a card
has ``type: AdaptiveCard``, a ``version`` and a ``body`` of elements — ``TextBlock`` (``text``, and
``weight``/``size``/``color``/``isSubtle``/``wrap``… from their enumerations), ``FactSet`` (``facts``
of ``title`` and ``value`` strings), ``Container`` (``items``) — may have ``actions``
(``Action.OpenUrl`` with an https ``url``) and ``msteams.width`` ``Full``. A message over 28 KB is
refused (413), a URL without its signature (``sig=``) is unauthorised (401), an invalid card is 400.
A good request is answered 202 Accepted with an empty body, as the flow answers.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonschema

MAX_BYTES = 28_000
_COLORS = ["Default", "Dark", "Light", "Accent", "Good", "Warning", "Attention"]
_TEXT_BLOCK = {
    "type": "object",
    "required": ["type", "text"],
    "additionalProperties": False,
    "properties": {
        "type": {"const": "TextBlock"},
        "text": {"type": "string"},
        "weight": {"enum": ["Default", "Lighter", "Bolder"]},
        "size": {"enum": ["Default", "Small", "Medium", "Large", "ExtraLarge"]},
        "color": {"enum": _COLORS},
        "fontType": {"enum": ["Default", "Monospace"]},
        "isSubtle": {"type": "boolean"},
        "wrap": {"type": "boolean"},
        "maxLines": {"type": "integer", "minimum": 1},
        "spacing": {"enum": ["None", "Small", "Default", "Medium", "Large", "ExtraLarge", "Padding"]},
        "separator": {"type": "boolean"},
        "horizontalAlignment": {"enum": ["Left", "Center", "Right"]},
        "id": {"type": "string"},
    },
}
_FACT_SET = {
    "type": "object",
    "required": ["type", "facts"],
    "additionalProperties": False,
    "properties": {
        "type": {"const": "FactSet"},
        "facts": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["title", "value"],
                "additionalProperties": False,
                "properties": {"title": {"type": "string"}, "value": {"type": "string"}},
            },
        },
        "spacing": {"type": "string"},
        "separator": {"type": "boolean"},
    },
}
_OPEN_URL = {
    "type": "object",
    "required": ["type", "url"],
    "additionalProperties": False,
    "properties": {
        "type": {"const": "Action.OpenUrl"},
        "url": {"type": "string", "pattern": "^https?://"},
        "title": {"type": "string"},
        "style": {"enum": ["default", "positive", "destructive"]},
    },
}
CARD_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$defs": {
        "element": {"oneOf": [_TEXT_BLOCK, _FACT_SET, {"$ref": "#/$defs/container"}]},
        "container": {
            "type": "object",
            "required": ["type", "items"],
            "additionalProperties": False,
            "properties": {
                "type": {"const": "Container"},
                "items": {"type": "array", "items": {"$ref": "#/$defs/element"}},
                "style": {"enum": ["default", "emphasis", "good", "attention", "warning", "accent"]},
            },
        },
    },
    "type": "object",
    "required": ["type", "version", "body"],
    "additionalProperties": False,
    "properties": {
        "$schema": {"type": "string"},
        "type": {"const": "AdaptiveCard"},
        "version": {"enum": ["1.0", "1.1", "1.2", "1.3", "1.4", "1.5"]},
        "body": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/element"}},
        "actions": {"type": "array", "items": _OPEN_URL},
        "msteams": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"width": {"const": "Full"}},
        },
        "fallbackText": {"type": "string"},
    },
}
MESSAGE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$defs": CARD_SCHEMA["$defs"],  # the card's "#/$defs/…" references resolve against this document
    "type": "object",
    "required": ["type", "attachments"],
    "properties": {
        "type": {"const": "message"},
        "summary": {"type": "string"},
        "attachments": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["contentType", "content"],
                "additionalProperties": False,
                "properties": {
                    "contentType": {"const": "application/vnd.microsoft.card.adaptive"},
                    "contentUrl": {"type": ["string", "null"]},
                    "content": CARD_SCHEMA,
                },
            },
        },
    },
}
_VALIDATOR = jsonschema.Draft202012Validator(MESSAGE_SCHEMA)


def message_errors(raw: bytes) -> list[str]:
    """Why the flow would refuse this body (empty: it would post the card)."""
    if len(raw) > MAX_BYTES:
        return [f"{len(raw)} bytes is more than Teams takes"]
    try:
        message = json.loads(raw)
    except ValueError as exc:
        return [f"not JSON: {exc}"]
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(message)'}: {e.message}" for e in _VALIDATOR.iter_errors(message)
    ]


@dataclass
class TeamsWorkflow:
    """``cards`` (each valid message's card, in order), ``refused`` (body, errors); ``fail`` forces a status."""

    cards: list[dict[str, Any]] = field(default_factory=list)
    refused: list[tuple[bytes, list[str]]] = field(default_factory=list)
    fail: int | None = None

    def __post_init__(self) -> None:
        workflow = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, body = workflow.handle(self.path, raw)
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{port}/workflows/abc123/triggers/manual/paths/invoke?api-version=1&sig=S3CR3Tsig"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def handle(self, path: str, raw: bytes) -> tuple[int, bytes]:
        if self.fail is not None:
            return self.fail, b'{"error":{"code":"Failed","message":"the flow failed"}}'
        if parse_qs(urlsplit(path).query).get("sig") != ["S3CR3Tsig"]:
            return 401, b'{"error":{"code":"DirectApiAuthorizationRequired","message":"no valid signature"}}'
        errors = message_errors(raw)
        if errors:
            self.refused.append((raw, errors))
            return (413 if "more than Teams takes" in errors[0] else 400), json.dumps({"errors": errors}).encode()
        self.cards.append(json.loads(raw)["attachments"][0]["content"])
        return 202, b""
