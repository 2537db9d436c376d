"""What an injection looks like in each output, written apart from the code that escapes.

Each detector takes what an output really carries (decoded JSON strings, a header value, a CSV cell,
terminal text) and returns the injections it finds (empty: none).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

# A mention that would notify: @channel / @here / @all / @everyone / @someone at the start of a word.
MENTION = re.compile(r"(?<![A-Za-z0-9])@(?:channel|here|all|everyone|[A-Za-z])")
# Slack's angle-bracket syntax: <!channel>, <!here>, <@U123>, <#C123>, <https://…|text>, <mailto:…>.
SLACK_SYNTAX = re.compile(r"<(?:[!@#]|[a-z][a-z0-9+.-]*:)", re.IGNORECASE)
# Markdown: links and images [t](u), reference links [t][r] / [r]: u, autolinks <scheme:…>, HTML tags.
MARKDOWN_LINK = re.compile(r"\]\s*[(\[:]")
MARKDOWN_IMAGE = re.compile(r"!\[")
ANGLE_TAG = re.compile(r"<\s*/?\s*[A-Za-z!?]")
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")


def strings(value: Any) -> Iterator[str]:
    """Every string in a decoded JSON value (keys too)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from strings(item)


def chat_injections(payload: Any, chat_format: str) -> list[str]:
    """Mentions, links, images, tags or control characters a chat of ``chat_format`` would act on."""
    found = []
    for text in strings(payload):
        found += [f"mention {m.group(0)!r} in {text[:80]!r}" for m in MENTION.finditer(text)]
        found += [f"control character in {text[:80]!r}" for _ in CONTROL.finditer(text)]
        if chat_format == "slack":
            found += [f"slack syntax in {text[:80]!r}" for _ in SLACK_SYNTAX.finditer(text)]
        else:
            found += [f"markdown link in {text[:80]!r}" for _ in MARKDOWN_LINK.finditer(text)]
            found += [f"markdown image in {text[:80]!r}" for _ in MARKDOWN_IMAGE.finditer(text)]
            found += [f"tag/autolink in {text[:80]!r}" for _ in ANGLE_TAG.finditer(text)]
    return found


def terminal_injections(text: str) -> list[str]:
    """Escape sequences and control characters (other than newline and tab) a terminal would obey."""
    return [repr(m.group(0)) for m in re.finditer(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]", text)]


NUMBER = re.compile(r"^[+-]?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?$")


def formula_cells(rows: list[list[str]]) -> list[str]:
    """CSV cells a spreadsheet would evaluate: starting with = + - @ (or tab/CR), other than a plain number."""
    return [cell for row in rows for cell in row if cell and cell[0] in "=+-@\t\r" and not NUMBER.match(cell)]
