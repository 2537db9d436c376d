"""Hole 3: chat injection. Data (here FOCUS ``BillingCurrency``, tags, job names) must never become a
mention, a link, an image or a line of its own in any chat format.

The webhook alert's summary (which includes the currency) skipped escaping, so
``<!channel> <https://evil.example|click>`` went out live to Slack; ``@channel``, ``@all`` and Markdown
links passed through for Mattermost/Rocket.Chat; Teams likewise.
"""

from __future__ import annotations

import pytest

from spendwatch.notify.alerts import action_alert, incident_alert
from spendwatch.notify.chat import CHAT_FORMATS
from spendwatch.notify.config import NotifyConfig
from spendwatch.notify.webhook import WebhookChannel, WebhookChannelConfig
from tests.security.conftest import Receiver
from tests.security.detectors import chat_injections
from tests.security.records import hostile_action, hostile_incident

CURRENCY = "<!channel> <https://evil.example|click>"
MARKDOWN = "@channel @all @here [click](https://evil.example) ![x](https://evil.example/p.png) <at>all</at>"
FORGED_LINE = "x\n:white_check_mark: *approved by the CFO*"


def _send(receiver: Receiver, chat_format: str, alert: object) -> object:
    config = WebhookChannelConfig.model_validate(
        {"name": "chat", "type": "webhook", "url": receiver.url, "format": chat_format}
    )
    WebhookChannel(config).send_alert(alert)  # type: ignore[arg-type]
    return receiver.posts[-1]


@pytest.mark.parametrize("chat_format", CHAT_FORMATS)
def test_a_hostile_currency_reaches_no_chat_as_markup(receiver: Receiver, chat_format: str) -> None:
    incident = hostile_incident("ml-team", currency=CURRENCY)
    posted = _send(receiver, chat_format, incident_alert(incident, NotifyConfig(), ()))
    assert chat_injections(posted, chat_format) == []
    assert "evil.example" in str(posted)  # still shown, as text


@pytest.mark.parametrize("chat_format", CHAT_FORMATS)
@pytest.mark.parametrize("text", [MARKDOWN, CURRENCY, FORGED_LINE])
def test_hostile_tags_and_names_reach_no_chat_as_markup(receiver: Receiver, chat_format: str, text: str) -> None:
    for alert in (
        incident_alert(hostile_incident(text), NotifyConfig(), ()),
        action_alert(hostile_action(text), NotifyConfig(), ()),
    ):
        posted = _send(receiver, chat_format, alert)
        assert chat_injections(posted, chat_format) == []


@pytest.mark.parametrize("chat_format", ["mattermost", "rocketchat"])
def test_a_field_cannot_forge_a_line(receiver: Receiver, chat_format: str) -> None:
    posted = _send(receiver, chat_format, incident_alert(hostile_incident(FORGED_LINE), NotifyConfig(), ()))
    lines = posted["text"].splitlines()  # type: ignore[index]
    assert not any(line.startswith(":white_check_mark:") for line in lines)
    assert len(lines) == 4  # title, summary, culprit, footer


def test_the_slack_payload_keeps_its_shape() -> None:
    alert = incident_alert(hostile_incident("ml-team", currency="USD", incident_id=7), NotifyConfig(), ())
    assert alert.payload["text"].startswith(":rotating_light: spendwatch: CRITICAL spike")
    assert "incident #7 · `spendwatch anomalies show 7`" in alert.payload["blocks"][-1]["elements"][0]["text"]
    assert alert.payload["unfurl_links"] is False
