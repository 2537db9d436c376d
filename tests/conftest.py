"""Suite-wide safety: fake cloud credentials, loopback-only network, and shared fixtures."""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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


# The README's demo sample names this day: the demo's estate ends on the day it runs.
DEMO_DAY = datetime(2026, 11, 26, 7, 10, tzinfo=UTC)


@pytest.fixture(scope="session")
def pinned_demo(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Any:
    """``run_demo`` on ``DEMO_DAY``, run once for the whole session (every xdist worker shares it).

    The first worker to ask runs it under a file lock and pickles the result beside its output folder
    (``result.folder``); the others load it. Tests read the run, and its store, and change neither.
    """
    from filelock import FileLock

    from spendwatch.demo import run_demo

    root = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        root = root.parent  # the directory every worker's basetemp shares
    folder = root / "pinned-demo"
    done = folder / "result.pickle"
    with FileLock(str(root / "pinned-demo.lock")):
        if not done.exists():
            result = run_demo(folder / "demo", FixedClock(DEMO_DAY), say=lambda _: None)
            done.write_bytes(pickle.dumps(result))
    return pickle.loads(done.read_bytes())


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: two workers per CPU this process may use (cgroup-aware), at most eight more than the CPUs.

    Much of the suite waits rather than computes (servers on loopback, child processes, DuckDB opening a
    file): measured on 2 CPUs, quiet, the whole suite took 430 s with two workers, 326 s with three and
    314 s with four.
    """
    from spendwatch.detect.parallel import available_cpus

    cpus = available_cpus()
    return min(2 * cpus, cpus + 8)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files holding a ``slow`` or ``bench`` test run first: xdist hands out whole files in collection order, so
    the longest start early and the run does not end on one worker finishing a long file alone."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow") or item.get_closest_marker("bench")}
    items.sort(key=lambda item: item.path not in slow_files)
