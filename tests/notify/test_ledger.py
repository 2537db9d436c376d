"""Exactly-once digest: claims, crashes in every window, retries, supersession, concurrency, the schedule."""

from __future__ import annotations

import socket
import threading
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from spendwatch.cli import main
from spendwatch.notify.send import due_day, parse_days, send_digest
from spendwatch.store import Store
from tests.doubles.clock import FixedClock
from tests.doubles.smtp import SmtpServer
from tests.notify.estate import NOW, load, write_config

DAY = date(2026, 11, 20)


def folder_setup(tmp_path: Path, **digest: Any) -> tuple[Any, Store, FixedClock, Path]:
    notify = {"channels": [{"name": "outbox", "type": "folder", "path": "outbox"}], "digest": digest}
    config = load(write_config(tmp_path, notify=notify))
    clock = FixedClock(NOW)
    return config, Store(config.store.path, clock=clock), clock, tmp_path / "outbox"


def smtp_setup(tmp_path: Path, server: SmtpServer, **digest: Any) -> tuple[Any, Store, FixedClock]:
    notify = {
        "channels": [{"name": "mail", "type": "smtp", "host": "127.0.0.1", "port": server.port, "security": "none"}],
        "digest": {"recipients": ["ops@example.com"], **digest},
    }
    config = load(write_config(tmp_path, notify=notify))
    clock = FixedClock(NOW)
    return config, Store(config.store.path, clock=clock), clock


def plant(store: Store, status: str, claimed_by: str, *, claimed_at: datetime = NOW, message_id: str = "<m@x>") -> None:
    store.migrate()
    with store.transaction() as con:
        con.execute(
            "INSERT INTO digests (day, status, attempts, message_id, claimed_at, claimed_by) VALUES (?, ?, 1, ?, ?, ?)",
            [DAY, status, message_id, claimed_at, claimed_by],
        )


def dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def plain_smtp(tmp_path: Path) -> Any:
    server = SmtpServer(tmp_path)
    yield server
    server.stop()


def test_a_claim_left_by_a_dead_process_before_sending_is_sent_with_the_same_message_id(
    tmp_path: Path, plain_smtp: SmtpServer
) -> None:
    config, store, clock = smtp_setup(tmp_path, plain_smtp)
    plant(store, "sending", f"{socket.gethostname()}:{dead_pid()}:oldtoken")

    outcome = send_digest(config, store, clock, DAY)

    assert outcome.status == "sent"
    [received] = plain_smtp.received()
    assert received.message["Message-ID"] == "<m@x>"
    assert store.query("SELECT status, attempts FROM digests") == [("sent", 2)]


@pytest.mark.parametrize(("policy", "expected"), [("assume-sent", 0), ("resend", 1)])
def test_a_crash_while_the_data_was_going_out_follows_the_policy(
    tmp_path: Path, plain_smtp: SmtpServer, policy: str, expected: int
) -> None:
    config, store, clock = smtp_setup(tmp_path, plain_smtp, on_interrupted_send=policy)
    plant(store, "committing", f"{socket.gethostname()}:{dead_pid()}:oldtoken")

    outcome = send_digest(config, store, clock, DAY)

    assert len(plain_smtp.received()) == expected
    if policy == "assume-sent":
        assert outcome.status == "skipped"
        assert store.query("SELECT status FROM digests") == [("unconfirmed",)]
        assert send_digest(config, store, clock, DAY).status == "skipped"  # and stays that way
    else:
        assert outcome.status == "sent"
        assert plain_smtp.received()[0].message["Message-ID"] == "<m@x>"  # mailboxes collapse a repeat


def test_a_live_claim_by_another_process_is_left_alone_until_it_times_out(
    tmp_path: Path, plain_smtp: SmtpServer
) -> None:
    config, store, clock = smtp_setup(tmp_path, plain_smtp, claim_timeout="15m")
    plant(store, "sending", "other-host:1234:token")

    busy = send_digest(config, store, clock, DAY)
    assert busy.status == "busy" and "other-host:1234" in busy.message
    assert plain_smtp.received() == []

    clock.advance(minutes=16)
    assert send_digest(config, store, clock, DAY).status == "sent"
    assert len(plain_smtp.received()) == 1


@pytest.mark.parametrize("delivered", [True, False])
def test_the_folder_channel_settles_an_interrupted_send_exactly(tmp_path: Path, delivered: bool) -> None:
    config, store, clock, outbox = folder_setup(tmp_path)
    plant(store, "committing", f"{socket.gethostname()}:{dead_pid()}:oldtoken", message_id="<m@x>")
    if delivered:
        outbox.mkdir()
        (outbox / "m_x.eml").write_text("Message-ID: <m@x>\n\nbody\n")

    outcome = send_digest(config, store, clock, DAY)

    if delivered:
        assert outcome.status == "skipped"
        assert store.query("SELECT status, error FROM digests") == [("sent", "confirmed after an interrupted send")]
        assert len(list(outbox.glob("*.eml"))) == 1
    else:
        assert outcome.status == "sent"
        assert [p.name for p in outbox.glob("*.eml")] == ["m_x.eml"]


def test_two_senders_at_once_send_one_digest(tmp_path: Path, plain_smtp: SmtpServer) -> None:
    config, store, clock = smtp_setup(tmp_path, plain_smtp)
    store.migrate()
    outcomes: list[str] = []
    barrier = threading.Barrier(3)

    def send() -> None:
        barrier.wait()
        outcomes.append(send_digest(config, Store(store.path, clock=clock), clock, DAY).status)

    threads = [threading.Thread(target=send) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert len(plain_smtp.received()) == 1
    assert sorted(outcomes).count("sent") == 1
    assert set(outcomes) <= {"sent", "busy", "skipped"}


def test_a_failed_day_is_superseded_when_the_next_one_is_due_and_the_next_digest_says_so(
    tmp_path: Path, plain_smtp: SmtpServer
) -> None:
    config, store, clock = smtp_setup(tmp_path, plain_smtp)
    assert send_digest(config, store, clock, DAY - timedelta(days=3)).status == "sent"
    plain_smtp.refuse_rcpt.add("ops@example.com")
    assert send_digest(config, store, clock, DAY - timedelta(days=1)).status == "failed"
    plain_smtp.refuse_rcpt.clear()

    clock.set(NOW + timedelta(hours=1))
    assert send_digest(config, store, clock, DAY).status == "sent"

    statuses = dict(store.query("SELECT day, status FROM digests"))
    assert statuses[DAY - timedelta(days=1)] == "superseded"
    text = plain_smtp.received()[-1].message.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    assert "No digest went out for 2026-11-18, 2026-11-19" in text
    assert "digest 2026-11-19: superseded after 1 attempt(s): channel mail" in text


def test_due_day_follows_the_local_clock_weekdays_and_dst() -> None:
    madrid = "Europe/Madrid"
    at = time(8, 0)
    # 06:59 UTC is 07:59 in Madrid (CET): the 20th's digest is not due yet; 07:00 UTC is 08:00.
    assert due_day(datetime(2026, 11, 20, 6, 59, tzinfo=UTC), madrid, at) == date(2026, 11, 19)
    assert due_day(datetime(2026, 11, 20, 7, 0, tzinfo=UTC), madrid, at) == date(2026, 11, 20)
    # In summer (CEST, UTC+2) 08:00 local is 06:00 UTC.
    assert due_day(datetime(2026, 7, 1, 6, 0, tzinfo=UTC), madrid, at) == date(2026, 7, 1)
    # Weekdays only: on Sunday the newest due digest is Friday's.
    assert due_day(datetime(2026, 11, 22, 12, 0, tzinfo=UTC), "UTC", at, "mon-fri") == date(2026, 11, 20)
    assert parse_days("fri-mon") == frozenset({4, 5, 6, 0})
    with pytest.raises(ValueError, match="not a day-of-week list"):
        parse_days("weekdays")


def test_cli_renders_without_sending_and_sends_once(tmp_path: Path) -> None:
    _, store, _, outbox = folder_setup(tmp_path)
    runner = CliRunner()
    path = str(tmp_path / "spendwatch.yaml")

    rendered = runner.invoke(
        main, ["digest", "--config", path, "--date", "2026-11-20", "--to-dir", str(tmp_path / "r")]
    )
    assert rendered.exit_code == 0, rendered.output
    names = sorted(p.name for p in (tmp_path / "r").iterdir())
    assert names == [f"spendwatch-digest-2026-11-20.{ext}" for ext in ("eml", "html", "txt")]
    assert store.query("SELECT count(*) FROM digests") == [(0,)]  # rendering records nothing

    first = runner.invoke(main, ["digest", "--config", path, "--date", "2026-11-20"])
    second = runner.invoke(main, ["digest", "--config", path, "--date", "2026-11-20"])
    assert first.exit_code == 0 and "sent via outbox" in first.output
    assert second.exit_code == 0 and "already sent" in second.output
    assert len(list(outbox.glob("*.eml"))) == 1
    forced = runner.invoke(main, ["digest", "--config", path, "--date", "2026-11-20", "--force"])
    assert forced.exit_code == 0 and "sent via outbox" in forced.output
