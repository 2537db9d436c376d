"""Fixtures for the guard tests: the fake Google server, a store and a config builder."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from spendwatch.config import Config
from spendwatch.store import Store
from tests.doubles.clock import FixedClock
from tests.doubles.google import google_api  # noqa: F401  (fixture)

NOW = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
PROJECT = "analytics-warehouse"


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def store(tmp_path: Path, clock: FixedClock) -> Store:
    return Store(tmp_path / "store.duckdb", clock=clock)


def gcp_config(
    tmp_path: Path,
    endpoint: str,
    *,
    guard: dict[str, Any] | None = None,
    rules: list[dict[str, Any]] | None = None,
    protection: dict[str, Any] | None = None,
    projects: list[str] | None = None,
    notify: dict[str, Any] | None = None,
) -> Config:
    killswitch: dict[str, Any] = {
        "rules": rules or [],
        "approvers": ["oncall@example.com"],
        "gcp": {"project": PROJECT, "anonymous": True, "endpoints": {"bigquery": endpoint}},
    }
    if protection is not None:
        killswitch["protection"] = protection
    return Config.model_validate(
        {
            "store": {"path": str(tmp_path / "store.duckdb")},
            "sources": [
                {
                    "name": "gcp-jobs",
                    "type": "gcp-jobs",
                    "gcp": {"project": PROJECT, "anonymous": True, "endpoints": {"bigquery": endpoint}},
                    "projects": projects or [PROJECT],
                    "vertex": {"enabled": False},
                    "dataproc": {"enabled": False},
                    "retry": {"initial": "0.01s", "maximum": "0.05s", "deadline": "60s"},
                }
            ],
            "killswitch": killswitch,
            "guard": guard or {},
            "notify": notify or {},
        }
    )


def cancel_rule(how: str = "enforce", **when: Any) -> dict[str, Any]:
    return {
        "name": "cancel-runaway-queries",
        "when": {"incident": {"kinds": ["guard"], **when}},
        "do": "cancel",
        "resource_types": ["bigquery-job"],
        "how": how,
        "allow_irreversible": True,
    }


from tests.doubles.kubernetes_api import kube_api  # noqa: E402, F401  (fixture: the Kubernetes API server double)
