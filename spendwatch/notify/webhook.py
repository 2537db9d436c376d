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

from pydantic import Field, SecretStr

from spendwatch.config_types import Duration
from spendwatch.notify.channels import CHANNELS, AlertMessage, Channel, ChannelConfig, ChannelError, Delivery
from spendwatch.notify.chat import ChatFormat, plain_text, render_chat
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
        body = json.dumps(payload).encode()
        headers = {name: value.get_secret_value() for name, value in self.config.headers.items()}
        request = urllib.request.Request(
            self.config.url.get_secret_value(),
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "spendwatch", **headers},
        )
        opener: Any = self.clients.get("url_opener", urllib.request.urlopen)
        where = f"channel {self.name} (webhook {redact_url(self.config.url)})"
        secrets = secret_values(self.config)
        try:
            with opener(request, timeout=self.config.timeout.total_seconds()) as response:
                answer = response.read(2000).decode(errors="replace")
                status = int(response.status)
        except urllib.error.HTTPError as exc:
            detail = plain_text(exc.read(300).decode(errors="replace"), 200)
            transient = exc.code == 429 or exc.code >= 500
            # ``from None``: the HTTPError carries the URL; what is kept of it is scrubbed.
            message = scrub(f"{where}: HTTP {exc.code} {detail}".strip(), secrets)
            raise ChannelError(message, transient=transient) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = scrub(str(getattr(exc, "reason", exc)), secrets)
            raise ChannelError(f"{where}: cannot reach the webhook: {reason}", transient=True) from None
        return Delivery(self.name, (), detail=scrub(f"HTTP {status} {plain_text(answer, 100)}".strip(), secrets))
