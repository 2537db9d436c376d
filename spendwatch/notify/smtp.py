"""``smtp``: email through an SMTP relay (STARTTLS, implicit TLS or plain on a trusted network).

The SMTP conversation is driven step by step (``MAIL``, ``RCPT`` per recipient, then ``DATA``) so
the caller's ``on_commit`` runs after every recipient was accepted and before the message data
goes out: a crash before that point certainly sent nothing.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from collections.abc import Callable
from datetime import timedelta
from typing import ClassVar, Literal

from pydantic import Field, SecretStr, model_validator

from spendwatch.config_types import ConfigPath, Duration
from spendwatch.notify.channels import CHANNELS, Channel, ChannelConfig, ChannelError, Delivery, OutgoingEmail

_DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}


class SmtpChannelConfig(ChannelConfig):
    type: Literal["smtp"] = "smtp"
    host: str = Field(min_length=1, description="the SMTP relay")
    port: int | None = Field(default=None, ge=1, le=65535, description="default: 587 starttls, 465 tls, 25 none")
    security: Literal["starttls", "tls", "none"] = Field(
        default="starttls", description="starttls (submission), tls (implicit, 'smtps') or none"
    )
    username: str | None = Field(default=None, description="log in with this user (use ${ENV})")
    password: SecretStr | None = Field(default=None, description="the password (use ${SMTP_PASSWORD})")
    timeout: Duration = Field(default=timedelta(seconds=30))
    verify_tls: bool = Field(default=True, description="check the server's certificate and name")
    ca_file: ConfigPath | None = Field(default=None, description="trust this CA bundle instead of the system's")
    local_hostname: str | None = Field(default=None, description="name sent in EHLO (default: this host's FQDN)")

    @model_validator(mode="after")
    def _credentials_pair(self) -> SmtpChannelConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        if self.password is not None and self.security == "none" and self.host not in ("localhost", "127.0.0.1"):
            raise ValueError("refusing to send a password without TLS; set security: starttls or tls")
        return self

    @property
    def effective_port(self) -> int:
        return self.port or _DEFAULT_PORTS[self.security]


SmtpFactory = Callable[[SmtpChannelConfig, ssl.SSLContext | None], smtplib.SMTP]


def _tls_context(config: SmtpChannelConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(config.ca_file) if config.ca_file else None)
    if not config.verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _connect(config: SmtpChannelConfig, context: ssl.SSLContext | None) -> smtplib.SMTP:
    timeout = config.timeout.total_seconds()
    if config.security == "tls":
        return smtplib.SMTP_SSL(
            config.host, config.effective_port, local_hostname=config.local_hostname, timeout=timeout, context=context
        )
    return smtplib.SMTP(config.host, config.effective_port, local_hostname=config.local_hostname, timeout=timeout)


@CHANNELS.register("smtp")
class SmtpChannel(Channel):
    config_model: ClassVar[type[ChannelConfig]] = SmtpChannelConfig
    config: SmtpChannelConfig
    sends_email: ClassVar[bool] = True
    needs_recipients: ClassVar[bool] = True

    def send_email(self, email: OutgoingEmail, *, on_commit: Callable[[], None] = lambda: None) -> Delivery:
        where = f"channel {self.name} (smtp {self.config.host}:{self.config.effective_port})"
        factory: SmtpFactory = self.clients.get("smtp_factory", _connect)
        context = _tls_context(self.config) if self.config.security != "none" else None
        try:
            smtp = factory(self.config, context)
        except (OSError, smtplib.SMTPException) as exc:
            raise ChannelError(f"{where}: cannot connect: {_describe(exc)}", transient=True) from exc
        try:
            return self._converse(smtp, email, context, on_commit, where)
        except smtplib.SMTPResponseException as exc:
            raise ChannelError(f"{where}: {_describe(exc)}", transient=400 <= exc.smtp_code < 500) from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise ChannelError(f"{where}: {_describe(exc)}", transient=True) from exc
        finally:
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                smtp.close()

    def _converse(
        self,
        smtp: smtplib.SMTP,
        email: OutgoingEmail,
        context: ssl.SSLContext | None,
        on_commit: Callable[[], None],
        where: str,
    ) -> Delivery:
        smtp.ehlo()
        if self.config.security == "starttls":
            if not smtp.has_extn("starttls"):
                raise ChannelError(f"{where}: the server does not offer STARTTLS", transient=False)
            smtp.starttls(context=context)
            smtp.ehlo()
        if self.config.username is not None and self.config.password is not None:
            try:
                smtp.login(self.config.username, self.config.password.get_secret_value())
            except smtplib.SMTPAuthenticationError as exc:
                raise ChannelError(
                    f"{where}: login as {self.config.username} refused: {_describe(exc)}", transient=False
                ) from exc
        code, reply = smtp.mail(email.envelope_sender)
        if code != 250:
            raise smtplib.SMTPSenderRefused(code, reply, email.envelope_sender)
        accepted, refused = _recipients(smtp, email.envelope_recipients())
        if not accepted:
            listed = "; ".join(f"{r}: {why}" for r, why in refused.items())
            raise ChannelError(f"{where}: every recipient was refused ({listed})", transient=False)
        on_commit()
        try:
            code, reply = smtp.data(email.wire_bytes())
        except smtplib.SMTPResponseException:
            raise
        except (OSError, smtplib.SMTPException) as exc:
            raise ChannelError(
                f"{where}: connection lost while sending the message data: {_describe(exc)}",
                transient=True,
                maybe_delivered=True,
            ) from exc
        if code != 250:
            raise smtplib.SMTPDataError(code, reply)
        return Delivery(self.name, tuple(accepted), refused, detail=reply.decode(errors="replace"))


def _recipients(smtp: smtplib.SMTP, recipients: list[str]) -> tuple[list[str], dict[str, str]]:
    accepted: list[str] = []
    refused: dict[str, str] = {}
    for recipient in recipients:
        code, reply = smtp.rcpt(recipient)
        if code in (250, 251):
            accepted.append(recipient)
        else:
            refused[recipient] = f"{code} {reply.decode(errors='replace')}"
    return accepted, refused


def _describe(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        return f"{exc.smtp_code} {text}".strip()
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return f"TLS failed: {exc}"
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
