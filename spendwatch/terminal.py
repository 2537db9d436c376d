"""What reaches a terminal: data strings can neither steer it nor forge a line.

Tag values, job names, query text and account names are written by anyone in the company, and a
terminal obeys what they may contain: ``ESC [ … m`` recolours, ``ESC ] 52`` writes the clipboard,
``ESC ] 8`` hides a link, ``\\r`` overwrites what was printed, U+202E reverses text, a newline forges a
line of its own. Two layers:

* ``clean(value)`` — for one data field in a table or a line: every character that is not printable
  (controls, line breaks, format characters such as the bidi overrides) is shown as its escape
  (``\\x1b``, ``\\n``, ``\\u202e``);
* ``install()`` — the CLI's ``sys.stdout``/``sys.stderr`` pass everything through ``clean_text``,
  which does the same except for the newlines and tabs of the layout itself, so no command — present
  or future — can print a terminal escape, whatever it forgot to clean.
"""

from __future__ import annotations

import io
import sys
import unicodedata
from collections.abc import Callable
from typing import Any, TextIO

# Unicode categories a terminal must never receive raw: controls, format (bidi, zero-width), surrogates,
# private use, unassigned, line and paragraph separators.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def _escape(ch: str) -> str:
    code = ord(ch)
    if ch == "\n":
        return "\\n"
    if ch == "\t":
        return "\\t"
    if ch == "\r":
        return "\\r"
    return f"\\x{code:02x}" if code < 0x100 else (f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")


def _unsafe(ch: str) -> bool:
    return unicodedata.category(ch) in _UNSAFE_CATEGORIES


def clean(value: object) -> str:
    """One data field, safe to print: every non-printable character shown as its escape."""
    text = str(value)
    if text.isprintable():
        return text
    return text.translate(_table(""))


def clean_text(text: str, *, keep: str = "\n\t") -> str:
    """Output text, safe to print: like ``clean`` but the layout's own ``keep`` characters pass."""
    if text.isprintable():
        return text
    return text.translate(_table(keep))


class CharMap(dict[int, str]):
    """A ``str.translate`` table filled from a per-character ``rule`` on first sight of each code point,
    so a long string of few distinct characters is rewritten at C speed; capped so a string of every
    code point cannot grow it without bound."""

    LIMIT = 1 << 16

    def __init__(self, rule: Callable[[str], str]) -> None:
        super().__init__()
        self.rule = rule

    def __missing__(self, code: int) -> str:
        value = self.rule(chr(code))
        if len(self) < self.LIMIT:
            self[code] = value
        return value


_TABLES: dict[str, CharMap] = {}


def _table(keep: str) -> CharMap:
    table = _TABLES.get(keep)
    if table is None:
        table = _TABLES[keep] = CharMap(lambda ch: _escape(ch) if _unsafe(ch) and ch not in keep else ch)
    return table


class SafeStream(io.TextIOBase):
    """A text stream that writes ``clean_text`` of everything to the stream it wraps."""

    def __init__(self, inner: TextIO) -> None:
        super().__init__()
        self.inner = inner

    def write(self, text: str) -> int:
        self.inner.write(clean_text(text))
        return len(text)

    def flush(self) -> None:
        self.inner.flush()

    def isatty(self) -> bool:
        return self.inner.isatty()

    def fileno(self) -> int:
        return self.inner.fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return str(getattr(self.inner, "encoding", None) or "utf-8")

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self.inner, "errors", None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def install() -> Callable[[], None]:
    """Wrap ``sys.stdout`` and ``sys.stderr`` in ``SafeStream``; returns what puts them back."""
    before = (sys.stdout, sys.stderr)
    if not isinstance(sys.stdout, SafeStream):
        sys.stdout = SafeStream(sys.stdout)
    if not isinstance(sys.stderr, SafeStream):
        sys.stderr = SafeStream(sys.stderr)

    def restore() -> None:
        sys.stdout, sys.stderr = before

    return restore
