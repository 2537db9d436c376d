from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.doubles.smtp import SmtpServer
from tests.notify.estate import build_estate


@pytest.fixture(scope="session")
def estate_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The simulated estate after collection and detection (read-only: copy it with ``copy_store``)."""
    return build_estate(tmp_path_factory.mktemp("estate"))


@pytest.fixture
def smtp_server(tmp_path: Path) -> Iterator[SmtpServer]:
    server = SmtpServer(tmp_path, security="starttls", users={"digest-bot": "s3cret"})
    yield server
    server.stop()
