"""``msteams``: immediate alerts as native Adaptive Cards in Microsoft Teams, through a Workflows webhook.

Teams retired Office 365 connectors (and their MessageCards); a channel now receives cards through
a Workflows (Power Automate) flow started by "When a Teams webhook request is received", which posts
each card it gets to the chosen channel or chat. Its URL carries a signature (``sig=``): it is the
credential, so ``url`` is a secret (``${TEAMS_WEBHOOK_URL}``).

The message is ``{"type": "message", "attachments": [{"contentType":
"application/vnd.microsoft.card.adaptive", "content": <AdaptiveCard 1.4>}]}`` with the same content
as the Slack alert — title, summary, culprit and other lines as a FactSet, footer and the
``spendwatch`` command — rendered by ``notify.chat`` in its ``teams`` format, where every field is
escaped (no mention, Markdown link, image or HTML can form). The card spans the channel's width.

Answers: 2xx (the flow answers 202) is delivered; 429 and 5xx are retried with backoff; other 4xx
(a wrong or expired signature, a flow turned off) are not.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any, ClassVar, Literal

from pydantic import Field

from spendwatch.config_types import Duration
from spendwatch.notify.channels import CHANNELS, AlertMessage, Channel, ChannelConfig, ChannelError, Delivery
from spendwatch.notify.chat import ChatMessage, plain_text, render_chat
from spendwatch.notify.http import post_json
from spendwatch.secrets import SecretUrl, redact_url, scrub, secret_values

MAX_MESSAGE_BYTES = 28_000  # Teams refuses a message larger than about 28 KB


class TeamsChannelConfig(ChannelConfig):
    type: Literal["msteams"] = "msteams"
    url: SecretUrl = Field(
        description="the Workflows webhook URL (its sig= is the credential): use ${TEAMS_WEBHOOK_URL}"
    )
    timeout: Duration = Field(default=timedelta(seconds=10))


@CHANNELS.register("msteams")
class TeamsChannel(Channel):
    config_model: ClassVar[type[ChannelConfig]] = TeamsChannelConfig
    config: TeamsChannelConfig

    def message(self, alert: AlertMessage) -> dict[str, Any]:
        """The Workflows request body: one Adaptive Card, every field escaped by ``notify.chat``."""
        chat = alert.chat or ChatMessage(icon="warning", title=alert.title)
        message = render_chat(chat, "teams")
        for attachment in message["attachments"]:
            attachment["content"]["msteams"] = {"width": "Full"}  # a cost table reads badly in a narrow card
        return message

    def send_alert(self, alert: AlertMessage) -> Delivery:
        message = self.message(alert)
        size = len(json.dumps(message).encode())
        if size > MAX_MESSAGE_BYTES:
            raise ChannelError(
                f"channel {self.name}: alert {alert.key} is {size} bytes, more than Teams takes", transient=False
            )
        secrets = secret_values(self.config)
        status, answer = post_json(
            self.config.url.get_secret_value(),
            message,
            where=f"channel {self.name} (Teams workflow {redact_url(self.config.url)})",
            timeout=self.config.timeout.total_seconds(),
            secrets=secrets,
            opener=self.clients.get("url_opener"),
        )
        return Delivery(self.name, (), detail=scrub(f"HTTP {status} {plain_text(answer, 100)}".strip(), secrets))
