"""AWS on loopback: one moto server for the session, reset before each test that asks for it."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.doubles.waits import PATIENCE


class MotoServer:
    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=PATIENCE) as response:
            response.read()

    def seed_cost_explorer(self, results: list[dict[str, Any]]) -> None:
        """Queue Cost Explorer answers: each call to get_cost_and_usage returns the next one."""
        body = json.dumps({"results": results}).encode()
        request = urllib.request.Request(
            f"{self.endpoint_url}/moto-api/static/ce/cost-and-usage-results",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=PATIENCE) as response:
            response.read()

    def stop(self) -> None:
        self._server.stop()


@pytest.fixture(scope="session")
def moto_server_session() -> Iterator[MotoServer]:
    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture
def moto_server(moto_server_session: MotoServer) -> MotoServer:
    """A clean moto server on 127.0.0.1 (state reset before the test)."""
    moto_server_session.reset()
    return moto_server_session
