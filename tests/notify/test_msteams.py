"""Microsoft Teams: Adaptive Cards through a Workflows webhook, with the Slack alert's content and escaping."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spendwatch.notify.alerts import action_alert, incident_alert, run_alerts
from spendwatch.notify.channels import AlertMessage, ChannelError
from spendwatch.notify.chat import WORD_JOINER
from spendwatch.notify.config import NotifyConfig
from spendwatch.notify.msteams import TeamsChannel, TeamsChannelConfig
from spendwatch.store import Store
from tests.doubles.clock import FixedClock
from tests.doubles.teams import TeamsWorkflow, message_errors
from tests.notify.estate import NOW, copy_store, insert_incident, load, write_config
from tests.security.detectors import chat_injections, strings
from tests.security.records import hostile_action, hostile_incident

HOSTILE = [
    "@channel @all <at>General</at> <at>ana@example.com</at>",  # mentions
    "[click me](https://evil.example/steal) [ref][1] [1]: https://evil.example ![x](https://evil.example/p.png)",
    "<b>bold</b> <script>alert(1)</script> <img src=x onerror=alert(1)> <https://evil.example>",  # HTML, autolink
    "line one\n**forged line**\u202e\u0007",  # a new line, bidi override, bell
]


@pytest.fixture
def workflow() -> Iterator[TeamsWorkflow]:
    server = TeamsWorkflow()
    yield server
    server.stop()


def teams(url: str) -> TeamsChannel:
    return TeamsChannel(TeamsChannelConfig.model_validate({"name": "teams", "type": "msteams", "url": url}))


def card_text(card: dict[str, Any]) -> str:
    return " ".join(strings(card["body"]))


def test_the_double_refuses_cards_teams_would_refuse() -> None:
    good = {"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": None, "content": {"type": "AdaptiveCard", "version": "1.4",
                                            "body": [{"type": "TextBlock", "text": "hi", "wrap": True}]}}]}  # fmt: skip
    assert message_errors(json.dumps(good).encode()) == []
    card = good["attachments"][0]["content"]  # type: ignore[index]
    bad = [
        {**good, "type": "card"},
        {**good, "attachments": []},
        {**good, "attachments": [{**good["attachments"][0], "contentType": "application/json"}]},  # type: ignore[index]
        {**good, "attachments": [{**good["attachments"][0], "content": {**card, "body": []}}]},  # type: ignore[index]
        {**good, "attachments": [{**good["attachments"][0], "content": {**card, "version": "2.0"}}]},  # type: ignore[index]
        {**good, "attachments": [{**good["attachments"][0], "content": {  # type: ignore[index]
            **card, "body": [{"type": "TextBlock", "text": "x", "weight": "Heavy"}]}}]},
        {**good, "attachments": [{**good["attachments"][0], "content": {  # type: ignore[index]
            **card, "body": [{"type": "FactSet", "facts": [{"title": "a"}]}]}}]},
        {**good, "attachments": [{**good["attachments"][0], "content": {  # type: ignore[index]
            **card, "body": [{"type": "Image", "url": "https://evil.example/p.png"}]}}]},
    ]  # fmt: skip
    for message in bad:
        assert message_errors(json.dumps(message).encode()), message
    assert message_errors(b"[") and message_errors(b" " * 30_000)


def test_an_incident_alert_is_an_adaptive_card_with_the_slack_alerts_content(workflow: TeamsWorkflow) -> None:
    alert = incident_alert(hostile_incident("ml-team", currency="USD", incident_id=7), NotifyConfig(), ())
    delivery = teams(workflow.url).send_alert(alert)

    assert workflow.refused == [] and len(workflow.cards) == 1 and delivery.detail.startswith("HTTP 202")
    card = workflow.cards[0]
    assert card["version"] == "1.4" and card["msteams"] == {"width": "Full"}
    text = card_text(card).replace(WORD_JOINER, "")
    slack = " ".join(strings(alert.payload["blocks"])).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    # Every piece of the Slack alert — title, summary, culprit, footer, command — is on the card.
    assert alert.chat is not None
    pieces = [alert.chat.title, alert.chat.summary, *(v for _, v in alert.chat.lines), alert.chat.footer,
              alert.chat.command]  # fmt: skip
    for piece in pieces:
        assert piece in text and piece in slack, piece
    facts = next(e for e in card["body"] if e["type"] == "FactSet")["facts"]
    assert facts[0]["title"] == "Culprit"


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_strings_reach_teams_as_text(workflow: TeamsWorkflow, text: str) -> None:
    channel = teams(workflow.url)
    for alert in (
        incident_alert(hostile_incident(text), NotifyConfig(), ()),
        action_alert(hostile_action(text), NotifyConfig(), ()),
    ):
        channel.send_alert(alert)
    assert workflow.refused == [] and len(workflow.cards) == 2
    for card in workflow.cards:
        assert chat_injections(card, "teams") == []
        shown = card_text(card)
        assert "\n" not in shown and "\u202e" not in shown
        assert not re.search(r"<\s*/?\s*(?:at|b|script|img)\b", shown)  # no tag, no <at> mention
        assert "evil.example" in shown or "forged" in shown or "General" in shown  # still shown, as text


def test_workflow_errors_are_retried_or_not_and_never_show_the_signature(workflow: TeamsWorkflow) -> None:
    alert = incident_alert(hostile_incident("ml"), NotifyConfig(), ())
    unsigned = teams(workflow.url.replace("sig=S3CR3Tsig", "sig=wrong"))
    with pytest.raises(ChannelError) as caught:
        unsigned.send_alert(alert)
    assert not caught.value.transient and "HTTP 401" in str(caught.value)
    assert "wrong" not in str(caught.value) and "S3CR3Tsig" not in str(caught.value)
    for status, transient in ((400, False), (429, True), (502, True)):
        workflow.fail = status
        with pytest.raises(ChannelError) as caught:
            teams(workflow.url).send_alert(alert)
        assert caught.value.transient is transient and "S3CR3Tsig" not in str(caught.value)
        assert "Teams workflow http://127.0.0.1" in str(caught.value)


def test_a_card_too_big_for_teams_is_refused_before_sending(workflow: TeamsWorkflow) -> None:
    alert = action_alert(hostile_action("x"), NotifyConfig(), ())
    assert alert.chat is not None
    from dataclasses import replace

    big = replace(alert, chat=replace(alert.chat, lines=tuple(("", "y" * 399) for _ in range(80))))
    with pytest.raises(ChannelError, match="more than Teams takes") as caught:
        teams(workflow.url).send_alert(big)
    assert not caught.value.transient and workflow.cards == [] and workflow.refused == []


def test_an_alert_without_chat_text_still_makes_a_card(workflow: TeamsWorkflow) -> None:
    teams(workflow.url).send_alert(AlertMessage("budget:ml:2026-11", "budget ml <at>all</at> over", {"text": "x"}))
    assert workflow.refused == [] and "budget ml" in card_text(workflow.cards[0])
    assert chat_injections(workflow.cards[0], "teams") == []


def test_alerts_reach_teams_once_through_the_alert_pass(
    tmp_path: Path, estate_store: Path, workflow: TeamsWorkflow
) -> None:
    notify = {
        "channels": [{"name": "teams", "type": "msteams", "url": "${TEAMS_WEBHOOK_URL}"}],
        "alerts": {"channels": ["teams"], "min_severity": "high"},
    }
    config = load(write_config(tmp_path, notify=notify), environ={"TEAMS_WEBHOOK_URL": workflow.url})
    copy_store(estate_store, tmp_path)
    clock = FixedClock(NOW)
    store = Store(config.store.path, clock=clock)
    insert_incident(store, severity="critical", impact=50_000.0)
    first = run_alerts(config, store, clock)
    assert first.failed == 0 and first.sent == len(workflow.cards) > 1 and workflow.refused == []
    assert run_alerts(config, store, clock).sent == 0
    assert "S3CR3Tsig" not in repr(config.notify.channels[0])
