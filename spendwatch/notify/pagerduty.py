"""``pagerduty``: incidents and kill-switch events as PagerDuty alerts (Events API v2).

Each spendwatch incident is one PagerDuty alert, its ``dedup_key`` the incident
(``<dedup_prefix>:incident:<id>``): ``trigger`` when it opens (again when it escalates or comes back),
``acknowledge`` when someone acknowledges it in spendwatch, ``resolve`` when it is over, withdrawn or
marked expected (``notify.lifecycle``). A kill-switch action waiting for approval, or failed, triggers
an alert of its own (``<dedup_prefix>:action:<id>``), resolved once the action settles.

Severity: spendwatch's low / medium / high / critical map to PagerDuty's info / warning / error /
critical (``severities`` changes the map). The routing key is a secret (``${PAGERDUTY_ROUTING_KEY}``):
it goes in the request body only, never in a message or a log line.

Every text field (summary, source, component, group, class, details) is escaped as ``relayed`` text
(``notify.chat``): PagerDuty passes it on to Slack, Teams and email, where it must not become a
mention or a link. Answers: 202 is delivered; 400 is a bad event (not retried); 429 and 5xx are
retried with backoff, as PagerDuty asks.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, timedelta
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field, SecretStr, field_validator

from spendwatch.config_types import Duration
from spendwatch.notify.channels import CHANNELS, AlertMessage, Channel, ChannelConfig, ChannelError, Delivery
from spendwatch.notify.chat import RELAYED, escape, plain_text
from spendwatch.notify.events import AlertEvent
from spendwatch.notify.http import post_json
from spendwatch.secrets import redact_url, scrub, secret_values
from spendwatch.store.records import Severity

EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
PagerSeverity = Literal["critical", "error", "warning", "info"]
DEFAULT_SEVERITIES: dict[str, str] = {"low": "info", "medium": "warning", "high": "error", "critical": "critical"}
MAX_SUMMARY = 1024  # PagerDuty's limits
MAX_DEDUP_KEY = 255
_ROUTING_KEY = re.compile(r"^[A-Za-z0-9]{32}$")


def _routing_key(value: SecretStr) -> SecretStr:
    # The message never echoes the value: it is a secret even when it is the wrong one.
    if not _ROUTING_KEY.match(value.get_secret_value()):
        raise ValueError(
            "a routing key is the 32-character integration key (letters and digits) of an Events API v2 "
            "integration on a PagerDuty service"
        )
    return value


def _endpoint(value: str) -> str:
    if not value.startswith(("https://", "http://")):
        raise ValueError("must be an https:// URL (or http:// for a local relay)")
    return value


RoutingKey = Annotated[SecretStr, AfterValidator(_routing_key)]


class PagerDutyChannelConfig(ChannelConfig):
    type: Literal["pagerduty"] = "pagerduty"
    routing_key: RoutingKey = Field(
        description="the service's Events API v2 integration key; a secret: use ${PAGERDUTY_ROUTING_KEY}"
    )
    url: Annotated[str, AfterValidator(_endpoint)] = Field(
        default=EVENTS_URL,
        description="the Events API endpoint (EU service region: https://events.eu.pagerduty.com/v2/enqueue)",
    )
    severities: dict[Severity, PagerSeverity] = Field(
        default_factory=lambda: dict(DEFAULT_SEVERITIES),  # type: ignore[arg-type]
        description="spendwatch severity → PagerDuty severity (those not given keep the default map)",
    )
    dedup_prefix: str = Field(
        default="spendwatch",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$",
        description="starts every dedup_key; give each spendwatch deployment sharing a service its own",
    )
    client_url: Annotated[str, AfterValidator(_endpoint)] | None = Field(
        default=None, description="a link on every alert: your spendwatch action page, a runbook …"
    )
    timeout: Duration = Field(default=timedelta(seconds=10))

    @field_validator("severities", mode="before")
    @classmethod
    def _complete(cls, value: Any) -> Any:
        return {**DEFAULT_SEVERITIES, **value} if isinstance(value, Mapping) else value


@CHANNELS.register("pagerduty")
class PagerDutyChannel(Channel):
    config_model: ClassVar[type[ChannelConfig]] = PagerDutyChannelConfig
    config: PagerDutyChannelConfig
    follows_incidents: ClassVar[bool] = True

    def send_alert(self, alert: AlertMessage) -> Delivery:
        body = self.event_body(alert)
        secrets = secret_values(self.config)
        status, answer = post_json(
            self.config.url,
            body,
            where=f"channel {self.name} (PagerDuty {redact_url(self.config.url)})",
            timeout=self.config.timeout.total_seconds(),
            secrets=secrets,
            opener=self.clients.get("url_opener"),
        )
        if status != 202:  # 2xx other than "Accepted" is not what the Events API answers
            raise ChannelError(f"channel {self.name}: PagerDuty answered HTTP {status}", transient=True)
        detail = f"{body['event_action']} {body['dedup_key']}: {_message(answer)}"
        return Delivery(self.name, (), detail=scrub(detail, secrets))

    def event_body(self, alert: AlertMessage) -> dict[str, Any]:
        """The Events API v2 request for ``alert`` (an alert without an event is a trigger of its key)."""
        event = alert.event or AlertEvent("trigger", alert.key, alert.title)
        body: dict[str, Any] = {
            "routing_key": self.config.routing_key.get_secret_value(),
            "event_action": event.action,
            "dedup_key": f"{self.config.dedup_prefix}:{event.subject}"[:MAX_DEDUP_KEY],
        }
        if event.action != "trigger":
            return body
        payload: dict[str, Any] = {
            "summary": _text(event.summary, MAX_SUMMARY) or _text(alert.title, MAX_SUMMARY) or "spendwatch alert",
            "source": _text(event.source, 255) or "spendwatch",
            "severity": self.config.severities.get(event.severity, "warning"),  # type: ignore[call-overload]
        }
        if event.at is not None:
            payload["timestamp"] = event.at.astimezone(UTC).isoformat()
        for name, value in (("component", event.component), ("group", event.group), ("class", event.kind)):
            if value:
                payload[name] = _text(value, 255)
        if event.details:
            payload["custom_details"] = _details(event.details)
        body.update(payload=payload, client="spendwatch")
        links = [{"href": self.config.client_url, "text": "spendwatch"}] if self.config.client_url else []
        # The action page's signed links (acknowledge, approve …): spendwatch's own URLs, never from data.
        signed = alert.chat.links if alert.chat else ()
        links += [{"href": link.url, "text": _text(link.label, 100)} for link in signed]
        if self.config.client_url:
            body["client_url"] = self.config.client_url
        if links:
            body["links"] = links
        return body


def _text(value: object, limit: int) -> str:
    return escape(value, RELAYED, limit=limit)


def _details(value: Any) -> Any:
    """Custom details with every string escaped (keys too); numbers and booleans as they are."""
    if isinstance(value, Mapping):
        return {_text(k, 100): _details(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_details(v) for v in value[:20]]
    if isinstance(value, bool | int | float) or value is None:
        return value
    return _text(value, 400)


def _message(answer: str) -> str:
    try:
        data = json.loads(answer)
    except ValueError:
        return plain_text(answer, 100)
    return plain_text(data.get("message", ""), 100) if isinstance(data, dict) else ""
