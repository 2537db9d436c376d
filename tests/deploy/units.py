"""Read a systemd unit file the way systemd does for the settings these tests look at."""

from __future__ import annotations

import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SYSTEMD = REPO / "deploy" / "systemd"
UNIT = SYSTEMD / "spendwatch.service"


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """section → key → every value assigned (in order); comments and blank lines dropped."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        if current is None or "=" not in line:
            raise ValueError(f"not a unit-file line: {line!r}")
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def service() -> dict[str, list[str]]:
    return parse_unit(UNIT.read_text())["Service"]


def last(settings: dict[str, list[str]], key: str) -> str:
    return settings[key][-1]


def environment(settings: dict[str, list[str]]) -> dict[str, str]:
    """Every ``Environment=`` assignment, later ones winning (systemd's own rule)."""
    env: dict[str, str] = {}
    for value in settings.get("Environment", []):
        for item in shlex.split(value):
            name, _, content = item.partition("=")
            env[name] = content
    return env


def exec_start(settings: dict[str, list[str]]) -> list[str]:
    return shlex.split(last(settings, "ExecStart"))
