"""Act from the email, end to end: a real aiosmtpd-received digest, its signed links opened in headless
Chromium (Debian ``chromium`` + ``chromium-driver``, driven by Selenium), confirmed, and the journal
changes. Forged, replayed, expired and cross-recipient links get a clear refusal page. Slack buttons:
signature and timestamp checked."""

from __future__ import annotations

import hashlib
import hmac
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spendwatch.killswitch.journal import action_events, get_action
from spendwatch.notify.send import send_digest
from spendwatch.notify.web import ActionPage, action_page, verify_slack
from spendwatch.store import Store
from tests.doubles.clock import FixedClock
from tests.doubles.smtp import SmtpServer
from tests.notify.estate import NOW, copy_store, load, write_config

KEY = "k" * 48
APPROVER = "finops@example.com"
CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def make_config(tmp_path: Path, smtp_port: int, base_url: str = "http://127.0.0.1:1", **page: Any) -> Any:
    notify = {
        "from": "spendwatch <spendwatch@example.com>",
        "channels": [{"name": "mail", "type": "smtp", "host": "127.0.0.1", "port": smtp_port, "security": "none"}],
        "digest": {"recipients": [APPROVER, "viewer@example.com"], "teams": False},
        "action_page": {"enabled": True, "base_url": base_url, "port": 0, **page},
    }
    killswitch = {
        "approvers": [APPROVER],
        "rules": [
            {
                "name": "stop-forgotten-training",
                "when": {"incident": {"min_severity": "high"}},
                "do": "stop",
                "resource_types": ["sagemaker-training-job"],
                "how": "approve",
            }
        ],
    }
    return load(write_config(tmp_path, notify=notify, killswitch=killswitch), {"SPENDWATCH_LINK_KEY": KEY})


@pytest.fixture
def world(tmp_path: Path, estate_store: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    monkeypatch.setenv("SPENDWATCH_LINK_KEY", KEY)
    smtp = SmtpServer(tmp_path)
    copy_store(estate_store, tmp_path)
    clock = FixedClock(NOW)
    first = make_config(tmp_path, smtp.port)
    store = Store(first.store.path, clock=clock)
    page = action_page(first, store, clock, environ={"SPENDWATCH_LINK_KEY": KEY})
    assert isinstance(page, ActionPage)
    page.start()
    config = make_config(tmp_path, smtp.port, base_url=f"http://127.0.0.1:{page.port}")
    awaiting_action(store, clock)
    try:
        yield {"config": config, "store": store, "clock": clock, "smtp": smtp, "page": page, "tmp": tmp_path}
    finally:
        page.stop()
        smtp.stop()


def awaiting_action(store: Store, clock: FixedClock) -> int:
    """An action awaiting approval, journaled as the engine does (plan, then awaiting-approval)."""
    from spendwatch.killswitch.base import Target
    from spendwatch.killswitch.journal import NewAction, plan_action, transition

    target = Target("aws", "sagemaker-training-job", "llm-finetune-ben-0412", account="210987654321",
                    region="us-east-1", owner="ben.okafor@example.com", saving_per_hour=59.1)  # fmt: skip
    new = NewAction("test:1", "stop-forgotten-training", None, "stop", "approve", target, "a forgotten GPU job",
                    True, {})  # fmt: skip
    record, _ = plan_action(store, new, now=clock.now(), actor="spendwatch")
    transition(store, record.id, "awaiting-approval", now=clock.now(), actor="spendwatch", expect=["planned"])
    return record.id


def links_in(smtp: SmtpServer, recipient: str) -> dict[str, list[str]]:
    """verb → URLs in the HTML digest that ``recipient`` received."""
    [message] = [r.message for r in smtp.received() if r.rcpt_tos == [recipient]]
    html = message.get_body(preferencelist=("html",)).get_content()  # type: ignore[union-attr]
    found: dict[str, list[str]] = {}
    for url, label in re.findall(r'<a href="(http://127\.0\.0\.1:\d+/a/[^"]+)"[^>]*>([^<]+)</a>', html):
        found.setdefault(label, []).append(url)
    return found


def fetch(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_each_recipient_gets_their_own_signed_links(world: dict[str, Any]) -> None:
    outcome = send_digest(world["config"], world["store"], world["clock"], NOW.date())
    assert outcome.status == "sent", outcome.message

    mine, theirs = links_in(world["smtp"], APPROVER), links_in(world["smtp"], "viewer@example.com")
    assert {"Acknowledge", "Mark expected", "Approve", "Reject"} <= set(mine)
    # Not an approver: no approve/reject buttons, but acknowledge works for any recipient.
    assert "Approve" not in theirs and "Acknowledge" in theirs
    assert not set(mine["Acknowledge"]) & set(theirs["Acknowledge"])


def test_get_never_changes_state_and_bad_links_are_refused_clearly(world: dict[str, Any]) -> None:
    send_digest(world["config"], world["store"], world["clock"], NOW.date())
    url = links_in(world["smtp"], APPROVER)["Acknowledge"][0]
    incident_id = int(re.search(r"incident #(\d+)", fetch(url)[1]).group(1))  # type: ignore[union-attr]

    for _ in range(3):
        status, page = fetch(url)
        assert status == 200 and "Nothing happens until you confirm" in page
    assert world["store"].query("SELECT status FROM anomalies WHERE id = ?", [incident_id])[0][0] in ("open", "ongoing")

    status, page = fetch(url[:-3] + ("AAA" if not url.endswith("AAA") else "BBB"))
    assert status == 400 and "not valid" in page
    # A POST without the page's CSRF token does nothing.
    status, page = fetch(url, data=b"csrf=forged")
    assert status == 403 and "open the link again" in page
    assert world["store"].query("SELECT count(*) FROM action_links_used")[0][0] == 0

    world["clock"].advance(days=4)  # link_ttl is 3 days
    status, page = fetch(url)
    assert status == 410 and "expired" in page


def test_cross_recipient_links_are_refused_behind_an_authenticating_ingress(
    tmp_path: Path, estate_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPENDWATCH_LINK_KEY", KEY)
    smtp = SmtpServer(tmp_path)
    try:
        copy_store(estate_store, tmp_path)
        clock = FixedClock(NOW)
        config = make_config(tmp_path, smtp.port, identity_header="X-Forwarded-Email")
        store = Store(config.store.path, clock=clock)
        page = action_page(config, store, clock, environ={"SPENDWATCH_LINK_KEY": KEY})
        assert page is not None
        page.start()
        try:
            config = make_config(
                tmp_path, smtp.port, f"http://127.0.0.1:{page.port}", identity_header="X-Forwarded-Email"
            )
            send_digest(config, store, clock, NOW.date())
            url = links_in(smtp, APPROVER)["Acknowledge"][0]
            status, text = fetch(url, headers={"X-Forwarded-Email": "viewer@example.com"})
            assert status == 403 and "was sent to finops@example.com" in text
            assert fetch(url, headers={"X-Forwarded-Email": "FinOps@example.com"})[0] == 200
        finally:
            page.stop()
    finally:
        smtp.stop()


def test_slack_requests_need_a_valid_signature_and_a_fresh_timestamp() -> None:
    body = b"payload=%7B%7D"
    now = 1_800_000_000.0
    stamp = str(int(now))
    good = "v0=" + hmac.new(b"secret", f"v0:{stamp}:".encode() + body, hashlib.sha256).hexdigest()
    headers = {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": good}
    assert verify_slack("secret", headers, body, now=lambda: now) is None
    assert verify_slack("other", headers, body, now=lambda: now) == "bad signature"
    assert verify_slack("secret", headers, body + b"x", now=lambda: now) == "bad signature"
    assert verify_slack("secret", headers, body, now=lambda: now + 301) == "stale or missing timestamp"


@pytest.mark.skipif(
    CHROMEDRIVER is None or CHROMIUM is None,
    reason="chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)",
)
def test_chromium_acknowledges_and_approves_through_the_page(world: dict[str, Any]) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    store, config = world["store"], world["config"]
    [waiting] = [r[0] for r in store.query("SELECT id FROM actions WHERE state = 'awaiting-approval'")]
    assert send_digest(config, store, world["clock"], NOW.date()).status == "sent"
    links = links_in(world["smtp"], APPROVER)

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={world['tmp'] / 'chromium-profile'}")
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    wait = WebDriverWait(driver, 60)
    try:

        def confirm(url: str) -> str:
            driver.get(url)
            wait.until(expected_conditions.element_to_be_clickable((By.ID, "confirm"))).click()
            return str(wait.until(expected_conditions.presence_of_element_located((By.ID, "outcome"))).text)

        acknowledge = links["Acknowledge"][0]
        # One click settles the card: every still-alerting incident of one cause (monitors overlap).
        shown = fetch(acknowledge)[1]
        incident_ids = [int(i) for i in re.findall(r"incident #(\d+)", shown)]
        assert incident_ids and f"as {APPROVER}".lower() in shown.lower()
        outcome = confirm(acknowledge)
        assert outcome.endswith(f"acknowledged by {APPROVER}")
        for incident_id in incident_ids:
            assert f"incident #{incident_id}" in outcome
            [(status, by)] = store.query("SELECT status, feedback_by FROM anomalies WHERE id = ?", [incident_id])
            assert (status, by) == ("acknowledged", APPROVER)

        [approve] = [u for u in links["Approve"] if fetch(u)[1].count(f"action #{waiting}")]
        assert f"action #{waiting} approved by {APPROVER}" in confirm(approve)
        record = get_action(store, waiting)
        assert (record.state, record.decided_by) == ("approved", APPROVER)
        assert any(e.actor == APPROVER and e.state == "approved" for e in action_events(store, waiting))

        # Replayed: the same link again, in the browser.
        driver.get(acknowledge)
        reason = wait.until(expected_conditions.presence_of_element_located((By.ID, "reason"))).text
        assert "already used by finops@example.com" in reason
        driver.get(acknowledge[:-4] + "XXXX")
        assert "not valid" in wait.until(expected_conditions.presence_of_element_located((By.ID, "reason"))).text
    finally:
        driver.quit()
    assert store.query("SELECT count(*) FROM action_links_used")[0][0] == 2
