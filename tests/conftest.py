"""Suite-wide safety: fake cloud credentials, loopback-only network, and shared fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.doubles import network
from tests.doubles.aws import moto_server, moto_server_session  # noqa: F401  (fixtures)
from tests.doubles.clock import FixedClock

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SPENDWATCH_SHARED_DIR", REPO.parent / "shared"))

# Fake credentials for the whole run, set before any client library is imported by a test:
# nothing in the suite can authenticate to a real cloud even if a test forgot an endpoint.
_FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
    "GOOGLE_CLOUD_PROJECT": "spendwatch-test",
    "NO_GCE_CHECK": "true",
}
os.environ.update(_FAKE_ENV)
for _name in (
    "GOOGLE_APPLICATION_CREDENTIALS",
    "AWS_PROFILE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "http_proxy",
    "https_proxy",
):
    os.environ.pop(_name, None)
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"

# Property tests judge outcomes, never speed: on a loaded CI machine an example (or generating one) can
# take seconds, and Hypothesis' per-example deadline and too-slow check would fail correct code.
settings.register_profile("spendwatch", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("spendwatch")


@pytest.fixture(autouse=True, scope="session")
def _loopback_only() -> Iterator[None]:
    network.install()
    yield
    network.uninstall()


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime(2026, 11, 20, 9, 30, tzinfo=UTC))


@pytest.fixture
def shared_dir() -> Path:
    """``../shared`` beside the repo; tests that need it skip (saying why) when it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent: this test reads the shared real-data/bench folders in place")
    return SHARED
