"""The ``ses`` channel against moto's SES on 127.0.0.1: raw MIME goes out, rejections are clear."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import boto3

from spendwatch.notify.send import send_digest
from spendwatch.store import Store
from tests.doubles.aws import MotoServer
from tests.doubles.clock import FixedClock
from tests.notify.estate import NOW, copy_store, load, write_config


def ses_config(tmp_path: Path, moto_server: MotoServer) -> Any:
    notify = {
        "from": "spendwatch <spendwatch@example.com>",
        "channels": [
            {
                "name": "ses",
                "type": "ses",
                "connection": {"region": "us-east-1", "endpoint_url": moto_server.endpoint_url},
            }
        ],
        "digest": {"recipients": ["finops@example.com"]},
    }
    return load(write_config(tmp_path, notify=notify))


def test_the_digest_goes_out_through_ses_once_the_sender_is_verified(
    tmp_path: Path, estate_store: Path, moto_server: MotoServer
) -> None:
    config = ses_config(tmp_path, moto_server)
    copy_store(estate_store, tmp_path)
    clock = FixedClock(NOW)
    store = Store(config.store.path, clock=clock)

    rejected = send_digest(config, store, clock, date(2026, 11, 20))
    assert rejected.status == "failed"
    assert "MessageRejected" in rejected.message  # unverified sender: a clear, permanent error

    ses = boto3.client("ses", region_name="us-east-1", endpoint_url=moto_server.endpoint_url)
    ses.verify_email_identity(EmailAddress="spendwatch@example.com")
    clock.advance(minutes=5)
    sent = send_digest(config, store, clock, date(2026, 11, 20))
    assert sent.status == "sent", sent.message
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends

    raw = [m for m in ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages if hasattr(m, "raw_data")]
    assert len(raw) == 1
    assert sent.message_id is not None and sent.message_id in raw[0].raw_data
    assert set(raw[0].destinations) == {"finops@example.com"}
