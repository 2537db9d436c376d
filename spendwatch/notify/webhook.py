"""``webhook``: immediate alerts as chat messages over HTTPS POST, in the chat's own format.

``format: slack`` (default) posts Slack's ``text`` + ``blocks``; ``mattermost`` and ``rocketchat``
post Markdown ``text``; ``teams`` posts an Adaptive Card message, as a Teams Workflows webhook takes.
Each format escapes every field its own way (``notify.chat``): data never becomes a mention or a
link. It cannot carry the digest email.
"""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar, Literal

from pydantic import Field, SecretStr

from spendwatch.config_types import Duration
from spendwatch.notify.channels import CHANNELS, AlertMessage, Channel, ChannelConfig, Delivery
from spendwatch.notify.chat import ChatFormat, plain_text, render_chat
from spendwatch.notify.http import post_json
from spendwatch.secrets import SecretUrl, redact_url, scrub, secret_values


class WebhookChannelConfig(ChannelConfig):
    type: Literal["webhook"] = "webhook"
    url: SecretUrl = Field(description="the webhook URL; it is a secret: use ${SLACK_WEBHOOK_URL}")
    format: ChatFormat = Field(
        default="slack",
        description="the chat's message format (and its escaping): slack, mattermost, rocketchat or teams",
    )
    timeout: Duration = Field(default=timedelta(seconds=10))
    headers: dict[str, SecretStr] = Field(
        default_factory=dict, description="extra HTTP headers (e.g. an auth token); values are secrets"
    )


@CHANNELS.register("webhook")
class WebhookChannel(Channel):
    config_model: ClassVar[type[ChannelConfig]] = WebhookChannelConfig
    config: WebhookChannelConfig

    def send_alert(self, alert: AlertMessage) -> Delivery:
        payload = alert.payload if alert.chat is None else render_chat(alert.chat, self.config.format)
        secrets = secret_values(self.config)
        status, answer = post_json(
            self.config.url.get_secret_value(),
            payload,
            where=f"channel {self.name} (webhook {redact_url(self.config.url)})",
            timeout=self.config.timeout.total_seconds(),
            secrets=secrets,
            headers={name: value.get_secret_value() for name, value in self.config.headers.items()},
            opener=self.clients.get("url_opener"),
        )
        return Delivery(self.name, (), detail=scrub(f"HTTP {status} {plain_text(answer, 100)}".strip(), secrets))
