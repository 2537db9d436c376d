"""POSTing JSON to a chat or incident service: one place that says how a failure should be retried.

``post_json`` returns the status and (the start of) the answer of a 2xx; anything else is a
``ChannelError`` whose ``transient`` says whether trying again soon may help (HTTP 408, 429, 5xx, a
connection refused or timed out) and whose text is scrubbed of the channel's secrets (a webhook URL,
a routing key: services echo requests back in their errors).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from spendwatch.notify.channels import ChannelError
from spendwatch.notify.chat import plain_text
from spendwatch.secrets import scrub

TRANSIENT_STATUSES = frozenset({408, 425, 429})


def post_json(
    url: str,
    payload: Any,
    *,
    where: str,
    timeout: float,
    secrets: list[str],
    headers: Mapping[str, str] | None = None,
    opener: Any = None,
) -> tuple[int, str]:
    """POST ``payload`` as JSON; ``where`` names the channel (and a redacted URL) in errors."""
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "spendwatch", **(headers or {})},
    )
    opener = opener or urllib.request.urlopen
    try:
        with opener(request, timeout=timeout) as response:
            answer = response.read(2000).decode(errors="replace")
            return int(response.status), answer
    except urllib.error.HTTPError as exc:
        detail = plain_text(exc.read(300).decode(errors="replace"), 200)
        transient = exc.code in TRANSIENT_STATUSES or exc.code >= 500
        # ``from None``: the HTTPError carries the URL; what is kept of it is scrubbed.
        message = scrub(f"{where}: HTTP {exc.code} {detail}".strip(), secrets)
        raise ChannelError(message, transient=transient) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = scrub(str(getattr(exc, "reason", exc)), secrets)
        raise ChannelError(f"{where}: cannot reach the service: {reason}", transient=True) from None
