"""Secrets in the config: types that never print, and redaction for whatever text might carry one.

What is a secret: passwords, every HTTP header value a user configures (they carry tokens), and
every webhook URL (Slack-style URLs are the credential; others carry ``?token=`` or ``user:pass@``).
Their config fields are ``SecretStr`` (``SecretUrl`` for URLs): ``repr``, ``str`` and
``model_dump_json`` show ``**********``; code that needs the value calls ``get_secret_value()`` at
the point of use and nowhere else.

Text that names a secret URL shows ``redact_url(url)`` — scheme and host only. Text that may
*contain* a secret by accident (a hook's output, an exception from a library, a log line) goes
through ``scrub``: the values ``secret_values(config)`` found are replaced by ``[redacted]``. Every log
line spendwatch writes is scrubbed against the secrets of the config loaded in the process
(``remember``), as a last line of defence.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlsplit

from pydantic import AfterValidator, BaseModel, SecretStr

REDACTED = "[redacted]"
MIN_SECRET = 4  # shorter values are not scrubbed from free text (they would mangle ordinary words)


def _http_url(value: SecretStr) -> SecretStr:
    if not value.get_secret_value().startswith(("https://", "http://")):
        raise ValueError("url must start with https:// (or http:// for a local relay)")
    try:
        urlsplit(value.get_secret_value()).port  # noqa: B018  (a bad port raises)
    except ValueError:
        raise ValueError("the URL has a bad port") from None
    return value


SecretUrl = Annotated[SecretStr, AfterValidator(_http_url)]
"""An http(s) URL that is a secret: shown as ``**********``, named in messages by ``redact_url``."""


def redact_url(url: str | SecretStr) -> str:
    """``https://hooks.example.com/…``: scheme, host and port only — never the path, query or user."""
    text = url.get_secret_value() if isinstance(url, SecretStr) else str(url)
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return "(a URL)"
    if not parts.scheme or not parts.hostname:
        return "(a URL)"
    host = f"{parts.hostname}:{port}" if port is not None else parts.hostname
    rest = "/…" if (parts.path not in ("", "/") or parts.query or parts.fragment) else ""
    return f"{parts.scheme}://{host}{rest}"


def url_parts(url: str) -> list[str]:
    """The pieces of a URL that are secret on their own: the whole, its path, password and query values."""
    found = [url]
    try:
        parts = urlsplit(url)
    except ValueError:
        return found
    if len(parts.path) > 1:
        found.append(parts.path)
    if parts.password:
        found.append(parts.password)
    found += [value for _, value in parse_qsl(parts.query)]
    return found


def secret_values(model: Any) -> list[str]:
    """Every secret in a (config) model, URLs with their secret parts; longest first."""
    found: set[str] = set()
    _collect(model, found)
    return sorted((v for v in found if len(v) >= MIN_SECRET), key=lambda v: (-len(v), v))


def _collect(value: Any, found: set[str]) -> None:
    if isinstance(value, SecretStr):
        secret = value.get_secret_value()
        found.update(url_parts(secret) if secret.startswith(("http://", "https://")) else [secret])
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            _collect(getattr(value, name), found)
    elif isinstance(value, dict):
        for item in value.values():
            _collect(item, found)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            _collect(item, found)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every one of ``secrets`` (longest first) replaced by ``[redacted]``."""
    for secret in sorted((s for s in secrets if len(s) >= MIN_SECRET), key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


# -- the process's known secrets (for log lines) ------------------------------------------------------

_KNOWN: set[str] = set()
_LOCK = threading.Lock()


def remember(model: Any) -> None:
    """Add a loaded config's secrets to those every log line is scrubbed of."""
    values = secret_values(model)
    with _LOCK:
        _KNOWN.update(values)


def known_secrets() -> list[str]:
    with _LOCK:
        return sorted(_KNOWN, key=len, reverse=True)


def scrub_known(text: str) -> str:
    """``text`` scrubbed of every secret of every config this process loaded."""
    known = known_secrets()
    return scrub(text, known) if known else text
