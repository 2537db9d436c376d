"""A real SQL engine behind the BigQuery API: ``bqemulator`` (DuckDB + SQLGlot) as a local server.

It runs in its own virtualenv (it pins DuckDB and SQLGlot versions of its own) under
``$SPENDWATCH_BQEMULATOR_VENV`` or ``~/.cache/spendwatch-tests/bqemulator-<version>``, created on first
use with pip (PyPI). DuckDB's ``spatial`` extension, which the emulator loads at start-up, normally
downloads from DuckDB's own site; that is not reachable here, so the venv also installs the
extension from PyPI (``duckdb-extension-spatial``, matching the DuckDB version) and the server runs
with a private ``HOME`` whose ``~/.duckdb/extensions`` holds it. When the venv cannot be built (no
PyPI), the fixture skips, saying why.

Fixture ``bqemulator`` (session): ``.endpoint`` (``http://127.0.0.1:PORT``) and ``.project``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

VERSION = "1.4.0"
DUCKDB = "1.5.5"
PACKAGES = [f"bqemulator=={VERSION}", f"duckdb=={DUCKDB}", f"duckdb-extension-spatial=={DUCKDB}", "numpy"]


@dataclass(frozen=True)
class Emulator:
    endpoint: str
    project: str


def _venv() -> Path:
    configured = os.environ.get("SPENDWATCH_BQEMULATOR_VENV")
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "spendwatch-tests" / f"bqemulator-{VERSION}-duckdb-{DUCKDB}"


def ensure_venv() -> Path:
    """The emulator's virtualenv, built on first use; raises RuntimeError when it cannot be."""
    from filelock import FileLock

    venv = _venv()
    venv.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(venv) + ".lock", timeout=900):  # pytest-xdist workers build it once
        return _build(venv)


def _build(venv: Path) -> Path:
    python = venv / "bin" / "python"
    marker = venv / ".spendwatch-ready"
    if marker.exists():
        return venv
    if venv.exists():
        shutil.rmtree(venv)
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *PACKAGES],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"cannot build the bqemulator virtualenv ({' '.join(step[:4])} …): {tail[0]}")
    marker.write_text(" ".join(PACKAGES))
    return venv


def _extension_home(venv: Path, home: Path) -> Path:
    found = list(
        venv.glob(f"lib/python*/site-packages/duckdb_extension_spatial/extensions/v{DUCKDB}/*.duckdb_extension")
    )
    if not found:
        raise RuntimeError("duckdb-extension-spatial did not ship the spatial extension binary")
    target = home / ".duckdb" / "extensions" / f"v{DUCKDB}" / "linux_amd64"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(found[0], target / "spatial.duckdb_extension")
    return home


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_ready(endpoint: str, project: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"bqemulator exited at start-up: {log.read_text()[-400:]}")
        try:
            with urllib.request.urlopen(f"{endpoint}/bigquery/v2/projects/{project}/datasets", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError("bqemulator did not answer within 90s")


@pytest.fixture(scope="session")
def bqemulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    if sys.platform != "linux":
        pytest.skip("the bqemulator fixture installs the Linux build of DuckDB's spatial extension")
    try:
        venv = ensure_venv()
        home = _extension_home(venv, tmp_path_factory.mktemp("bqemulator-home"))
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"bqemulator is unavailable here: {exc}")
    port, grpc_port = _free_port(), _free_port()
    project = "emulated-billing"
    log = home / "bqemulator.log"
    env = {**os.environ, "HOME": str(home)}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(venv / "bin" / "bqemulator"),
                "start",
                "--rest-port",
                str(port),
                "--grpc-port",
                str(grpc_port),
                "--project",
                project,
                "--log-level",
                "warning",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(endpoint, project, process, log)
        yield Emulator(endpoint, project)
    except RuntimeError as exc:
        pytest.skip(f"bqemulator is unavailable here: {exc}")
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
