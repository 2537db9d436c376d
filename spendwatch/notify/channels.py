"""Notification channels: the plugin base, the registry, and the ``folder`` channel.

A channel delivers an ``OutgoingEmail`` (the digest, an alert email) and/or an ``AlertMessage``
(Slack-compatible JSON). Channels never decide *whether* to send — the digest ledger and the alert
ledger do that — they only deliver once when asked, and say how it went:

* success returns a ``Delivery`` (which recipients were accepted, which refused);
* failure raises ``ChannelError`` with ``transient`` set when trying again soon may help
  (a connection refused, an SMTP 4xx, an HTTP 429/5xx) and cleared when it will not (bad
  credentials, every recipient refused, HTTP 4xx).

``on_commit`` is called at the point of no return — just before the message data goes out — so the
digest ledger can tell "certainly not sent" from "maybe sent" after a crash (see ``ledger``).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from email import policy as email_policy
from email.message import EmailMessage
from email.utils import parseaddr
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from spendwatch.config_types import ConfigPath, Name
from spendwatch.errors import DeliveryError
from spendwatch.notify.chat import ChatMessage
from spendwatch.plugins import Plugin, Registry, StrictModel


class ChannelError(DeliveryError):
    """A delivery failed; ``transient``: a quick retry may succeed; ``maybe_delivered``: the connection
    was lost after the message data started, so the receiver may have it."""

    def __init__(self, message: str, *, transient: bool, maybe_delivered: bool = False) -> None:
        super().__init__(message)
        self.transient = transient
        self.maybe_delivered = maybe_delivered


class ChannelConfig(StrictModel):
    """Settings every channel has; each channel type adds its own keys."""

    name: Name = Field(description="how the digest, alerts and routes refer to this channel")
    type: str


@dataclass(frozen=True)
class OutgoingEmail:
    """A finished MIME message and its envelope."""

    message: EmailMessage
    sender: str
    recipients: tuple[str, ...]
    # The HTML with images inlined as data: URIs, for channels that store a browsable copy.
    preview_html: str | None = None

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"] or "")

    @property
    def envelope_sender(self) -> str:
        return parseaddr(self.sender)[1]

    def envelope_recipients(self) -> list[str]:
        return [parseaddr(r)[1] for r in self.recipients]

    def wire_bytes(self) -> bytes:
        """The message with CRLF line ends, as SMTP requires (``smtplib`` sends bytes unchanged)."""
        return self.message.as_bytes(policy=email_policy.SMTP)


@dataclass(frozen=True)
class AlertMessage:
    """One immediate alert: a Slack-compatible payload and, for email channels, an email.

    ``chat`` is the alert as text; a chat channel renders it in its own format (``notify.chat``),
    which is where every field is escaped. ``payload`` is its Slack rendering.
    """

    key: str
    title: str
    payload: dict[str, Any]
    email: OutgoingEmail | None = None
    chat: ChatMessage | None = None


@dataclass(frozen=True)
class Delivery:
    channel: str
    accepted: tuple[str, ...] = ()
    refused: dict[str, str] = field(default_factory=dict)
    detail: str = ""


def _no_commit() -> None:
    return None


class Channel(Plugin):
    """A delivery channel. Subclasses set the capability flags and implement what they support."""

    config_model: ClassVar[type[ChannelConfig]] = ChannelConfig
    sends_email: ClassVar[bool] = False
    needs_recipients: ClassVar[bool] = False

    def __init__(self, config: ChannelConfig, *, clients: dict[str, Any] | None = None) -> None:
        self.config = config
        self.clients = clients or {}

    @property
    def name(self) -> str:
        return self.config.name

    def send_email(self, email: OutgoingEmail, *, on_commit: Callable[[], None] = _no_commit) -> Delivery:
        raise ChannelError(f"channel {self.name} ({self.config.type}) cannot send email", transient=False)

    def send_alert(self, alert: AlertMessage) -> Delivery:
        """Email channels send the alert's email; others override this."""
        if alert.email is None:
            raise ChannelError(f"channel {self.name}: alert {alert.key} has no email recipients", transient=False)
        return self.send_email(alert.email)

    def confirm(self, message_id: str) -> bool | None:
        """Whether a message was delivered, if this channel can tell (``None``: it cannot)."""
        return None


CHANNELS: Registry[type[Channel]] = Registry("channel type")


def build_channel(config: ChannelConfig, clients: dict[str, Any] | None = None) -> Channel:
    return CHANNELS.get(config.type)(config, clients=clients)


# -- folder ----------------------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_file_stem(text: str) -> str:
    return _UNSAFE.sub("_", text.strip("<>")).strip("_")[:120] or "message"


class FolderChannelConfig(ChannelConfig):
    type: Literal["folder"] = "folder"
    path: ConfigPath = Field(description="folder the messages are written to (created if missing)")


@CHANNELS.register("folder")
class FolderChannel(Channel):
    """Writes each email as ``.eml`` (plus a browsable ``.html``) and each alert as ``.json``: for demos."""

    config_model: ClassVar[type[ChannelConfig]] = FolderChannelConfig
    config: FolderChannelConfig
    sends_email: ClassVar[bool] = True

    def send_email(self, email: OutgoingEmail, *, on_commit: Callable[[], None] = _no_commit) -> Delivery:
        stem = safe_file_stem(email.message_id or str(email.message["Subject"]))
        on_commit()
        if email.preview_html is not None:
            self._write(f"{stem}.html", email.preview_html.encode())
        # The .eml goes last: its presence is what ``confirm`` trusts.
        self._write(f"{stem}.eml", email.message.as_bytes())
        return Delivery(self.name, tuple(email.recipients), detail=str(self.config.path / f"{stem}.eml"))

    def send_alert(self, alert: AlertMessage) -> Delivery:
        stem = safe_file_stem(f"alert-{alert.key}")
        self._write(f"{stem}.json", json.dumps(alert.payload, indent=2, sort_keys=True).encode())
        if alert.email is not None:
            self._write(f"{stem}.eml", alert.email.message.as_bytes())
        return Delivery(self.name, alert.email.recipients if alert.email else (), detail=f"{stem}.json")

    def confirm(self, message_id: str) -> bool | None:
        return (self.config.path / f"{safe_file_stem(message_id)}.eml").exists()

    def _write(self, name: str, data: bytes) -> None:
        """Write atomically (temp file + rename): a reader never sees half a message."""
        folder = self.config.path
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(dir=folder, prefix=".partial-")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                Path(temp).replace(folder / name)
            except BaseException:
                Path(temp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise ChannelError(
                f"channel {self.name}: cannot write {folder / name}: {exc.strerror}", transient=True
            ) from exc
