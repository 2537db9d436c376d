"""Fixtures for kill-switch tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from spendwatch.store import Store
from tests.doubles.clock import FixedClock
from tests.killswitch.factories import NOW, REGION, new_store


@pytest.fixture
def ks_clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def store(tmp_path: Path, ks_clock: FixedClock) -> Store:
    return new_store(tmp_path, ks_clock)


@pytest.fixture
def aws(moto_server: Any) -> Any:
    """boto3 clients on the moto server: ``aws("ec2")``."""
    import boto3

    session = boto3.Session(region_name=REGION)

    def make(service: str) -> Any:
        return session.client(service, endpoint_url=moto_server.endpoint_url, region_name=REGION)

    make.endpoint_url = moto_server.endpoint_url  # type: ignore[attr-defined]
    return make
