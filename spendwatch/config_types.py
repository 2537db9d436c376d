"""Small reusable config value types: durations, money thresholds, names."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, PlainSerializer, ValidationInfo, WithJsonSchema

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
# Longer than any schedule, lookback or retention makes sense for; it also keeps ``now - duration``
# and the scheduler's arithmetic far from the limits of ``datetime`` (a traceback otherwise).
MAX_DURATION = timedelta(days=36_500)


def parse_duration(value: Any) -> timedelta:
    """``90`` (seconds), ``"90s"``, ``"15m"``, ``"2h"``, ``"3d"``, ``"1w"`` → timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '15m', '2h', '3d'")
    if isinstance(value, int | float):
        return _bounded(_as_float(value))
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return _bounded(float(match.group(1)) * _UNITS[match.group(2)])
    raise ValueError(f"{value!r} is not a duration; use seconds or a string like '15m', '2h', '3d'")


def _as_float(value: float) -> float:
    try:
        return float(value)
    except OverflowError:  # an int past float's range
        return math.inf if value > 0 else -math.inf


def _bounded(seconds: float) -> timedelta:
    if math.isnan(seconds):
        raise ValueError("a duration must be a number, not NaN")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"a duration must be at most {MAX_DURATION.days} days (100 years)")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    seconds = value.total_seconds()
    for unit in ("w", "d", "h", "m"):
        size = _UNITS[unit]
        if seconds and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": _DURATION.pattern},
                {"type": "number", "minimum": 0},
            ],
            "description": "seconds, or a number with a unit: 30s, 15m, 2h, 3d, 1w",
        }
    ),
]

Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$", max_length=64)]
"""A user-chosen identifier (source, monitor, rule, notifier): lowercase, digits, ``_.-``."""


def _base_dir(info: ValidationInfo) -> Path | None:
    base = (info.context or {}).get("base_dir")
    return Path(base) if base is not None else None


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    value = value.expanduser()
    base = _base_dir(info)
    return (base / value).resolve() if base is not None and not value.is_absolute() else value


def _resolve_pattern(value: str, info: ValidationInfo) -> str:
    if "://" in value:
        return value
    return str(_resolve_path(Path(value), info))


ConfigPath = Annotated[Path, AfterValidator(_resolve_path)]
"""A path; relative ones are resolved against the folder of the config file."""

ConfigPattern = Annotated[str, AfterValidator(_resolve_pattern)]
"""A path or glob; relative ones are resolved against the folder of the config file."""


_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_days(spec: str) -> frozenset[int]:
    """``*``, ``mon-fri``, ``mon,wed,fri`` (APScheduler's day_of_week names) → weekday numbers."""
    spec = spec.strip().lower()
    if spec in ("*", ""):
        return frozenset(range(7))
    days: set[int] = set()
    for part in spec.split(","):
        first, _, last = part.strip().partition("-")
        if first not in _DAYS or (last and last not in _DAYS):
            raise ValueError(f"{spec!r} is not a day-of-week list; use '*', 'mon-fri' or 'mon,wed,fri'")
        a, b = _DAYS.index(first), _DAYS.index(last or first)
        days.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(b + 1)])
    return frozenset(days)


def encoding_problem(head: bytes) -> str | None:
    """Why the start of a file is not UTF-8 text (UTF-16/32, binary), or ``None``."""
    if head.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        return "is UTF-32 text, not UTF-8"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "is UTF-16 text, not UTF-8"
    if b"\x00" in head[:65536]:
        return "is not a text file (it holds NUL bytes)"
    return None
