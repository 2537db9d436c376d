"""Alerts carry the signed links too: Slack buttons answered at /slack/actions (signature, timestamp,
approvers, single use), an email per recipient with their own links, Markdown links in other chats
bound to the channel — end to end against a local webhook receiver and the action page."""

from __future__ import annotations

import email
import email.policy
import hashlib
import hmac
import json
import re
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spendwatch.killswitch.journal import action_events, get_action
from spendwatch.notify.alerts import run_alerts
from spendwatch.notify.web import ActionPage, action_page
from spendwatch.store import Store
from tests.doubles.clock import FixedClock
from tests.doubles.waits import PATIENCE
from tests.notify import small_estate
from tests.notify.estate import insert_incident
from tests.notify.small_estate import NOW
from tests.notify.test_action_page import awaiting_action, fetch
from tests.notify.test_alerts import Hook

KEY = "k" * 48
SECRET = "slack-signing-secret-for-tests"
ENVIRON = {"SPENDWATCH_LINK_KEY": KEY, "SLACK_SIGNING_SECRET": SECRET}


def configure(folder: Path, clock: FixedClock, hook: Hook, base_url: str, *, fmt: str = "slack", **page: Any) -> Any:
    notify = {
        "from": "spendwatch <spendwatch@example.com>",
        "channels": [
            {"name": "chat", "type": "webhook", "url": hook.url, "format": fmt},
            {"name": "outbox", "type": "folder", "path": "outbox"},
        ],
        "alerts": {"channels": ["chat", "outbox"], "recipients": ["finops@example.com", "viewer@example.com"]},
        "action_page": {"enabled": True, "base_url": base_url, "port": 0, **page},
    }
    killswitch = {
        "approvers": ["slack:ana", "finops@example.com", "boss@example.com"],
        "rules": [{"name": "stop-forgotten-training", "when": {"incident": {"min_severity": "high"}}, "do": "stop",
                   "resource_types": ["sagemaker-training-job"], "how": "approve"}],
    }  # fmt: skip
    config, _ = small_estate.build(folder, clock, notify=notify, killswitch=killswitch)
    return config


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    for name, value in ENVIRON.items():
        monkeypatch.setenv(name, value)
    clock = FixedClock(NOW)
    hook = Hook()
    first = configure(tmp_path, clock, hook, "http://127.0.0.1:1", slack_signing_secret_env="SLACK_SIGNING_SECRET")
    store = Store(first.store.path, clock=clock)
    page = action_page(first, store, clock, environ=ENVIRON)
    assert isinstance(page, ActionPage)
    answers: list[tuple[str, dict[str, Any]]] = []
    page.respond = lambda url, answer: answers.append((url, answer))
    page.start()
    base = f"http://127.0.0.1:{page.port}"
    config = first.model_copy(
        update={
            "notify": first.notify.model_copy(
                update={"action_page": first.notify.action_page.model_copy(update={"base_url": base})}
            )
        }
    )
    incident_id = insert_incident(store, now=NOW, severity="high")
    action_id = awaiting_action(store, clock)
    try:
        yield {"config": config, "store": store, "clock": clock, "hook": hook, "page": page, "base": base,
               "answers": answers, "incident": incident_id, "action": action_id, "tmp": tmp_path}  # fmt: skip
    finally:
        page.stop()
        hook.stop()


def buttons(post: dict[str, Any]) -> dict[str, str]:
    """action_id → the button's value (its signed token), from a Slack payload."""
    found = {}
    for block in post["blocks"]:
        if block["type"] == "actions":
            found.update({e["action_id"]: e["value"] for e in block["elements"]})
    return found


def click(base: str, token: str, user: str, *, secret: str = SECRET, at: float | None = None) -> tuple[int, str]:
    """POST a Slack block_actions payload for a button, signed as Slack signs it."""
    payload = {"type": "block_actions", "user": {"id": "U" + user.upper(), "username": user},
               "actions": [{"action_id": "x", "value": token}], "response_url": "https://hooks.slack.com/actions/T/1/x"}  # fmt: skip
    body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
    stamp = str(int(at if at is not None else time.time()))
    signature = "v0=" + hmac.new(secret.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256).hexdigest()
    headers = {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": signature,
               "Content-Type": "application/x-www-form-urlencoded"}  # fmt: skip
    return fetch(f"{base}/slack/actions", data=body, headers=headers)


def wait_for_answers(answers: list[Any], count: int) -> None:
    deadline = time.monotonic() + PATIENCE
    while len(answers) < count and time.monotonic() < deadline:
        time.sleep(0.05)  # polling a list the page's responder thread appends to; bounded by PATIENCE
    assert len(answers) >= count, answers


def test_slack_buttons_act_through_the_page_with_a_valid_signature_only(world: dict[str, Any]) -> None:
    store, base, answers = world["store"], world["base"], world["answers"]
    run = run_alerts(world["config"], store, world["clock"])
    assert run.failed == 0, run.errors
    posts = {("incident" if "incident #" in json.dumps(p) else "action"): p for p in world["hook"].posts}
    incident_buttons, action_buttons = buttons(posts["incident"]), buttons(posts["action"])
    assert set(incident_buttons) == {"spendwatch-acknowledge", "spendwatch-expected"}
    assert set(action_buttons) == {"spendwatch-approve", "spendwatch-reject"}

    # Forged (wrong secret) and stale (ten minutes old) clicks are refused and change nothing.
    assert click(base, action_buttons["spendwatch-reject"], "ana", secret="guess")[0] == 401
    assert click(base, action_buttons["spendwatch-reject"], "ana", at=time.time() - 600)[0] == 401
    assert get_action(store, world["action"]).state == "awaiting-approval"

    # Someone not on killswitch.approvers may not approve; the journal is unchanged.
    assert click(base, action_buttons["spendwatch-approve"], "mallory")[0] == 200
    wait_for_answers(answers, 1)
    assert "slack:mallory is not on killswitch.approvers" in answers[-1][1]["text"]
    assert get_action(store, world["action"]).state == "awaiting-approval"

    # An approver's click approves, journaled with who; the answer goes to Slack's response_url.
    assert click(base, action_buttons["spendwatch-approve"], "ana")[0] == 200
    wait_for_answers(answers, 2)
    record = get_action(store, world["action"])
    assert (record.state, record.decided_by) == ("approved", "slack:ana")
    assert any(e.actor == "slack:ana" and e.state == "approved" for e in action_events(store, world["action"]))
    assert answers[-1] == (
        "https://hooks.slack.com/actions/T/1/x",
        {"response_type": "in_channel", "replace_original": False,
         "text": f"action #{world['action']} approved by slack:ana; the next kill-switch pass carries it out"},
    )  # fmt: skip

    # Anyone in the channel may acknowledge an incident; the same button again is refused (single use).
    assert click(base, incident_buttons["spendwatch-acknowledge"], "bob")[0] == 200
    wait_for_answers(answers, 3)
    [(status, by)] = store.query("SELECT status, feedback_by FROM anomalies WHERE id = ?", [world["incident"]])
    assert (status, by) == ("acknowledged", "slack:bob")
    click(base, incident_buttons["spendwatch-acknowledge"], "carol")
    wait_for_answers(answers, 4)
    assert "already used by slack:bob" in answers[-1][1]["text"]


def test_email_alerts_carry_each_recipients_own_links(world: dict[str, Any]) -> None:
    run_alerts(world["config"], world["store"], world["clock"])
    outbox = world["tmp"] / "outbox"
    mails = {}
    for path in sorted(outbox.glob("alert-*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        kind = "incident" if "alert-incident" in path.name else "action"
        mails[(kind, str(message["To"]))] = message.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    assert set(mails) == {(k, r) for k in ("incident", "action") for r in ("finops@example.com", "viewer@example.com")}

    def links(text: str) -> dict[str, str]:
        return dict(re.findall(r"^(Acknowledge|Mark expected|Approve|Reject): (http://\S+)$", text, re.M))

    mine, theirs = links(mails[("incident", "finops@example.com")]), links(mails[("incident", "viewer@example.com")])
    assert set(mine) == set(theirs) == {"Acknowledge", "Mark expected"} and mine != theirs
    assert set(links(mails[("action", "finops@example.com")])) == {"Approve", "Reject"}
    assert links(mails[("action", "viewer@example.com")]) == {}  # not an approver: no approve link
    status, page = fetch(theirs["Acknowledge"])
    assert status == 200 and "As viewer@example.com" in page
    # The link is bound to its recipient and verb: a changed byte is not valid.
    assert fetch(theirs["Acknowledge"][:-2] + "xx")[0] == 400


def test_other_chats_get_links_bound_to_the_channel_and_approving_needs_to_know_who(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in ENVIRON.items():
        monkeypatch.setenv(name, value)
    clock = FixedClock(NOW)
    hook = Hook()
    try:
        config = configure(tmp_path, clock, hook, "http://127.0.0.1:1", fmt="mattermost", identity_header="X-Email")
        store = Store(config.store.path, clock=clock)
        page = action_page(config, store, clock, environ=ENVIRON)
        assert page is not None
        page.start()
        try:
            base = f"http://127.0.0.1:{page.port}"
            config = configure(tmp_path, clock, hook, base, fmt="mattermost", identity_header="X-Email")
            insert_incident(store, now=NOW, severity="high")
            action_id = awaiting_action(store, clock)
            run_alerts(config, store, clock)
            text = "\n".join(p["text"] for p in hook.posts)
            found = dict(re.findall(r"\[(Acknowledge|Mark expected|Approve|Reject)\]\((http://[^)]+)\)", text))
            assert set(found) == {"Acknowledge", "Mark expected", "Approve", "Reject"}

            # Behind the ingress the signed-in person acts; without one, approving is refused.
            status, refused = fetch(found["Approve"])
            assert status == 403 and "spendwatch must know who you are" in refused
            status, shown = fetch(found["Approve"], headers={"X-Email": "viewer@example.com"})
            assert status == 403 and "viewer@example.com is not on killswitch.approvers" in shown
            status, shown = fetch(found["Approve"], headers={"X-Email": "Boss@example.com"})
            assert status == 200 and "As boss@example.com" in shown
            assert get_action(store, action_id).state == "awaiting-approval"  # GET changed nothing
            status, shown = fetch(found["Acknowledge"])
            assert status == 200 and "As channel:chat" in shown
        finally:
            page.stop()
    finally:
        hook.stop()
