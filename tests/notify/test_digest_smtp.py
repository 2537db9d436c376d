"""The digest through a real SMTP server (aiosmtpd on 127.0.0.1): parts, inline charts, recipients, escaping."""

from __future__ import annotations

import re
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from spendwatch.notify.send import send_digest
from spendwatch.store import Store
from tests.doubles.clock import FixedClock
from tests.doubles.smtp import SmtpServer
from tests.notify.estate import NOW, copy_store, insert_incident, job_link, load, write_config

DAY = date(2026, 11, 20)


def smtp_notify(server: SmtpServer, **digest: Any) -> dict[str, Any]:
    return {
        "from": "spendwatch <spendwatch@example.com>",
        "channels": [
            {
                "name": "mail",
                "type": "smtp",
                "host": "127.0.0.1",
                "port": server.port,
                "security": "starttls",
                "username": "digest-bot",
                "password": "${SMTP_PASSWORD}",
                "ca_file": str(server.ca_file),
                "timeout": "10s",
            }
        ],
        # One message to everyone (teams folded in); per-team digests are tested in test_teams.py.
        "digest": {"recipients": ["finops@example.com", "CFO <cfo@example.com>"], "teams": False, **digest},
        "routes": [
            {"name": "ml", "owners": ["ben.okafor@example.com"], "recipients": ["ml-team@example.com"]},
            {"name": "nobody", "accounts": ["999999999999"], "recipients": ["ghost@example.com"]},
        ],
    }


def setup(tmp_path: Path, estate_store: Path, server: SmtpServer, **digest: Any) -> tuple[Any, Store, FixedClock]:
    config = load(write_config(tmp_path, notify=smtp_notify(server, **digest)), {"SMTP_PASSWORD": "s3cret"})
    copy_store(estate_store, tmp_path)
    clock = FixedClock(NOW)
    return config, Store(config.store.path, clock=clock), clock


def test_the_digest_arrives_once_with_text_html_and_inline_charts(
    tmp_path: Path, estate_store: Path, smtp_server: SmtpServer
) -> None:
    config, store, clock = setup(tmp_path, estate_store, smtp_server)

    outcome = send_digest(config, store, clock, DAY)

    assert outcome.status == "sent", outcome.message
    [received] = smtp_server.received()
    # The route for the ML team matched (ben.okafor's training job is in the estate's incidents).
    assert sorted(received.rcpt_tos) == ["cfo@example.com", "finops@example.com", "ml-team@example.com"]
    assert received.mail_from == "spendwatch@example.com"
    message = received.message
    assert message["Subject"].startswith("spendwatch digest 2026-11-20: ")
    assert "open incident" in message["Subject"]
    assert message["Message-ID"] == outcome.message_id
    assert message.get_content_type() == "multipart/alternative"
    text, related = message.get_payload()  # type: ignore[misc]
    assert text.get_content_type() == "text/plain"
    assert related.get_content_type() == "multipart/related"
    html_part, *images = related.get_payload()
    html = html_part.get_content()
    assert html_part.get_content_type() == "text/html"
    assert images and all(i.get_content_type() == "image/png" for i in images)
    for image in images:
        cid = image["Content-ID"].strip("<>")
        assert f'src="cid:{cid}"' in html
        assert image.get_payload(decode=True).startswith(b"\x89PNG")
    assert "<script" not in html.lower()
    plain = text.get_content()
    assert "YESTERDAY'S SPEND" in plain and "INCIDENTS" in plain and "DATA FRESHNESS" in plain
    assert "dana.kim@example.com's query bquxjob_7f3a2c91_runaway" in plain
    assert "llm-finetune-ben-0412" in html

    again = send_digest(config, store, clock, DAY)
    assert again.status == "skipped" and "already sent" in again.message
    assert len(smtp_server.received()) == 1
    row = store.query("SELECT status, attempts, message_id FROM digests WHERE day = ?", [DAY])
    assert row == [("sent", 1, outcome.message_id)]


def test_user_controlled_labels_arrive_inert(tmp_path: Path, estate_store: Path, smtp_server: SmtpServer) -> None:
    config, store, clock = setup(tmp_path, estate_store, smtp_server)
    import json

    insert_incident(store, severity="critical", impact=90_000.0, jobs=json.dumps([job_link()]))

    assert send_digest(config, store, clock, DAY).status == "sent"

    message = smtp_server.received()[0].message
    html = message.get_body(preferencelist=("html",)).get_content()  # type: ignore[union-attr]
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    text = message.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    assert "<script>alert('x')</script>" in text  # plain text is inert as it is


def test_a_refused_data_is_retried_and_a_dead_relay_is_recorded_for_later(
    tmp_path: Path, estate_store: Path, smtp_server: SmtpServer
) -> None:
    config, store, clock = setup(tmp_path, estate_store, smtp_server)
    smtp_server.fail_data_with.append("451 4.3.0 try again later")

    outcome = send_digest(config, store, clock, DAY)

    assert outcome.status == "sent"
    assert len(smtp_server.received()) == 1  # the 451 was retried within the run, and sent once

    # A relay that refuses every recipient: recorded as failed with a next attempt, then retried.
    smtp_server.refuse_rcpt.update({"finops@example.com", "cfo@example.com", "ml-team@example.com"})
    next_day = DAY + timedelta(days=1)
    clock.set(NOW + timedelta(days=1))
    failed = send_digest(config, store, clock, next_day)
    assert failed.status == "failed" and "every recipient was refused" in failed.message
    [(status, attempts, retry_at)] = store.query(
        "SELECT status, attempts, next_attempt_at FROM digests WHERE day = ?", [next_day]
    )
    assert (status, attempts) == ("failed", 1)
    assert retry_at == clock.now() + timedelta(minutes=1)
    assert send_digest(config, store, clock, next_day).status == "skipped"  # not before its retry time

    smtp_server.refuse_rcpt.clear()
    clock.advance(minutes=2)
    assert send_digest(config, store, clock, next_day).status == "sent"
    assert store.query("SELECT status, attempts FROM digests WHERE day = ?", [next_day]) == [("sent", 2)]
    assert len(smtp_server.received()) == 2


def test_a_wrong_password_is_a_clear_failure(tmp_path: Path, estate_store: Path, smtp_server: SmtpServer) -> None:
    config = load(write_config(tmp_path, notify=smtp_notify(smtp_server)), {"SMTP_PASSWORD": "wrong"})
    copy_store(estate_store, tmp_path)
    clock = FixedClock(NOW)

    outcome = send_digest(config, Store(config.store.path, clock=clock), clock, DAY)

    assert outcome.status == "failed"
    assert "login as digest-bot refused" in outcome.message
    assert smtp_server.received() == []


@pytest.mark.parametrize("security", ["tls", "none"])
def test_implicit_tls_and_plain_relays(tmp_path: Path, estate_store: Path, security: str) -> None:
    server = SmtpServer(tmp_path, security=security)
    try:
        notify = smtp_notify(server)
        channel = notify["channels"][0]
        channel.update(security=security)
        del channel["username"], channel["password"]
        if security == "none":
            del channel["ca_file"]
        config = load(write_config(tmp_path, notify=notify))
        copy_store(estate_store, tmp_path)
        clock = FixedClock(NOW)

        outcome = send_digest(config, Store(config.store.path, clock=clock), clock, DAY)

        assert outcome.status == "sent", outcome.message
        [received] = server.received()
        assert re.search(r"spendwatch digest 2026-11-20", received.message["Subject"])
    finally:
        server.stop()
