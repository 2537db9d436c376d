"""``ses``: email through Amazon SES (``SendRawEmail``), with the credentials of ``AwsConnection``.

The raw MIME message is sent as built (HTML, text and inline charts), so SES and SMTP deliver the
same bytes. SES answers once per call, so the point of no return is the call itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal

from pydantic import Field

from spendwatch.connections import AwsConnection, aws_client, aws_session
from spendwatch.notify.channels import CHANNELS, Channel, ChannelConfig, ChannelError, Delivery, OutgoingEmail

# Errors that will not go away by trying again in a minute.
_PERMANENT = {
    "MessageRejected",
    "MailFromDomainNotVerifiedException",
    "ConfigurationSetDoesNotExistException",
    "AccountSendingPausedException",
    "AccessDenied",
    "AccessDeniedException",
    "InvalidParameterValue",
    "ValidationError",
}


class SesChannelConfig(ChannelConfig):
    type: Literal["ses"] = "ses"
    connection: AwsConnection = Field(default_factory=AwsConnection, description="region, profile, role …")
    configuration_set: str | None = Field(default=None, description="SES configuration set (event publishing)")


@CHANNELS.register("ses")
class SesChannel(Channel):
    """Needs ``ses:SendRawEmail`` on the From identity."""

    config_model: ClassVar[type[ChannelConfig]] = SesChannelConfig
    config: SesChannelConfig
    sends_email: ClassVar[bool] = True
    needs_recipients: ClassVar[bool] = True
    permissions: ClassVar[tuple[str, ...]] = ("ses:SendRawEmail",)

    def _client(self) -> Any:
        session = aws_session(self.config.connection, self.clients.get("boto3_session"))
        return aws_client(self.config.connection, "ses", session=session)

    def send_email(self, email: OutgoingEmail, *, on_commit: Callable[[], None] = lambda: None) -> Delivery:
        from botocore.exceptions import BotoCoreError, ClientError, ConnectionClosedError, ReadTimeoutError

        where = f"channel {self.name} (ses)"
        params: dict[str, Any] = {
            "Source": email.envelope_sender,
            "Destinations": email.envelope_recipients(),
            "RawMessage": {"Data": email.wire_bytes()},
        }
        if self.config.configuration_set:
            params["ConfigurationSetName"] = self.config.configuration_set
        committed = False
        try:
            client = self._client()
            on_commit()
            committed = True
            answer = client.send_raw_email(**params)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            message = exc.response.get("Error", {}).get("Message", str(exc))
            raise ChannelError(f"{where}: {code}: {message}", transient=code not in _PERMANENT) from exc
        except BotoCoreError as exc:
            # A read timeout after the request went out leaves SES's answer unknown.
            raise ChannelError(
                f"{where}: {exc}",
                transient=True,
                maybe_delivered=committed and isinstance(exc, ReadTimeoutError | ConnectionClosedError),
            ) from exc
        return Delivery(self.name, tuple(email.recipients), detail=f"ses MessageId {answer.get('MessageId', '?')}")
