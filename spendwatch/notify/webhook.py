"""``webhook``: immediate alerts as chat messages over HTTPS POST, in the chat's own format.

``format: slack`` (default) posts Slack's ``text`` + ``blocks``; ``mattermost`` and ``rocketchat``
post Markdown ``text``; ``teams`` posts an Adaptive Card message, as a Teams Workflows webhook takes.
Each format escapes every field its own way (``notify.chat``): data never becomes a mention or a
link. It cannot carry the digest email.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import timedelta
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr, field_validator

from spendwatch.config_types import Duration
from spendwatch.notify.channels import CHANNELS, AlertMessage, Channel, ChannelConfig, ChannelError, Delivery
from spendwatch.notify.chat import ChatFormat, render_chat


class WebhookChannelConfig(ChannelConfig):
    type: Literal["webhook"] = "webhook"
    url: SecretStr = Field(description="the webhook URL; it is a secret: use ${SLACK_WEBHOOK_URL}")
    format: ChatFormat = Field(
        default="slack",
        description="the chat's message format (and its escaping): slack, mattermost, rocketchat or teams",
    )
    timeout: Duration = Field(default=timedelta(seconds=10))
    headers: dict[str, str] = Field(default_factory=dict, description="extra HTTP headers (e.g. an auth token)")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith(("https://", "http://")):
            raise ValueError("url must start with https:// (or http:// for a local relay)")
        return value


@CHANNELS.register("webhook")
class WebhookChannel(Channel):
    config_model: ClassVar[type[ChannelConfig]] = WebhookChannelConfig
    config: WebhookChannelConfig

    def send_alert(self, alert: AlertMessage) -> Delivery:
        payload = alert.payload if alert.chat is None else render_chat(alert.chat, self.config.format)
        body = json.dumps(payload).encode()
        request = urllib.request.Request(
            self.config.url.get_secret_value(),
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "spendwatch", **self.config.headers},
        )
        opener: Any = self.clients.get("url_opener", urllib.request.urlopen)
        where = f"channel {self.name} (webhook)"
        try:
            with opener(request, timeout=self.config.timeout.total_seconds()) as response:
                answer = response.read(2000).decode(errors="replace")
                status = int(response.status)
        except urllib.error.HTTPError as exc:
            detail = exc.read(300).decode(errors="replace").strip()
            transient = exc.code == 429 or exc.code >= 500
            raise ChannelError(f"{where}: HTTP {exc.code} {detail}".strip(), transient=transient) from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ChannelError(f"{where}: cannot reach the webhook: {reason}", transient=True) from exc
        return Delivery(self.name, (), detail=f"HTTP {status} {answer[:100]}".strip())
