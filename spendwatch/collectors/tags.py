"""Tags and labels: parsing them from exports and deriving a line's owner and job from them."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa

from spendwatch.store.schema import TAGS_TYPE

TagList = list[tuple[str, str]]


def parse_tags_json(text: str | None) -> TagList | None:
    """FOCUS ``Tags`` is a JSON object; values may be non-strings and are kept as text.

    Raises ``ValueError`` on text that is not a JSON object.
    """
    if text is None or text in {"", "NULL"}:
        return None
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return [(str(k), _as_text(v)) for k, v in value.items()]


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value)


def first_tag(tags: Sequence[tuple[str, str]] | Mapping[str, str] | None, keys: Iterable[str]) -> str | None:
    """The value of the first of ``keys`` present (and non-empty) in ``tags``."""
    if not tags:
        return None
    lookup = dict(tags) if not isinstance(tags, Mapping) else tags
    for key in keys:
        value = lookup.get(key)
        if value:
            return value
    return None


def derive_column(tags: pa.Array | pa.ChunkedArray, keys: Sequence[str]) -> pa.Array:
    """For each row, the first of ``keys`` found in its tag map (or null)."""
    values = tags.to_pylist()
    return pa.array([first_tag(row, keys) for row in values], type=pa.string())


def tags_array(rows: Iterable[TagList | None]) -> pa.Array:
    return pa.array(list(rows), type=TAGS_TYPE)
