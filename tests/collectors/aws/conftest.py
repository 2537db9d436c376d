"""Fixtures of the AWS collector tests: a recording boto3 session checked against the IAM policy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spendwatch.collectors.aws.api import Backoff
from spendwatch.store import Store
from tests.doubles.aws_calls import CallLog, denied, recording_session
from tests.doubles.clock import FixedClock


@pytest.fixture
def call_log() -> Iterator[CallLog]:
    """Every AWS call of the test; at teardown each must be allowed by deploy/aws/collector-policy.json."""
    log = CallLog()
    yield log
    missing = denied(log.actions)
    assert not missing, f"AWS calls not allowed by deploy/aws/collector-policy.json: {sorted(missing)}"


@pytest.fixture
def aws_session(call_log: CallLog) -> Any:
    return recording_session(call_log)


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def clients(aws_session: Any, sleeps: list[float]) -> dict[str, Any]:
    """What a source's context gets: the recording session and a backoff that records instead of sleeping."""
    return {"boto3_session": aws_session, "aws_backoff": Backoff(sleep=sleeps.append)}


@pytest.fixture
def store(tmp_path: Path, clock: FixedClock) -> Store:
    return Store(tmp_path / "spendwatch.duckdb", clock=clock)
