"""The ``notify:`` section: channels (notifier plugins), the daily digest, immediate alerts, team routes.

A channel is a notifier plugin registered by name in ``CHANNELS`` (``smtp``, ``ses``, ``webhook``,
``msteams``, ``pagerduty``, ``folder``, and any a plugin package adds); each carries its own config
model, so the whole section is validated before anything runs. The digest and the alerts name the
channels they use; routes add team recipients to the digest and to alerts when an incident or action
belongs to the team (by owner or account).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from datetime import timedelta
from email.headerregistry import Address
from email.utils import parseaddr
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

import spendwatch.notify.plugins  # noqa: F401  (registers the channel types)
from spendwatch.config_types import ConfigPath, Duration, Name
from spendwatch.notify.channels import CHANNELS, ChannelConfig
from spendwatch.plugins import PluginUnion, StrictModel
from spendwatch.store.records import SEVERITY_ORDER, Severity

# A discriminated union, as sources are: each channel validates with its own type's model (plugins'
# too, once loaded), the JSON Schema lists every type's keys, and spendwatch.config strips the union
# tag from error paths.
ChannelSpec = Annotated[ChannelConfig, PluginUnion(CHANNELS)]


def _check_address(value: str) -> str:
    _, address = parseaddr(value)
    try:
        Address(addr_spec=address)
    except (ValueError, IndexError):
        raise ValueError(f"{value!r} is not an email address") from None
    if "@" not in address or address.startswith("@") or address.endswith("@"):
        raise ValueError(f"{value!r} is not an email address")
    return value


EmailAddress = Annotated[str, AfterValidator(_check_address)]
"""``ops@example.com`` or ``Ops Team <ops@example.com>``."""

ActionState = Literal["planned", "awaiting-approval", "running", "done", "failed", "undone", "expired"]


class RetryPolicy(StrictModel):
    """Exponential backoff between delivery attempts (across scheduler runs)."""

    initial: Duration = Field(default=timedelta(minutes=1), description="wait after the first failure")
    max: Duration = Field(default=timedelta(minutes=30), description="the longest wait between attempts")
    quick_attempts: int = Field(
        default=3, ge=1, le=10, description="attempts inside one run (a few seconds apart) before waiting"
    )

    def delay(self, attempts: int) -> timedelta:
        """The wait after ``attempts`` failed attempts (1, 2, 4 … × initial, capped at max)."""
        factor = 2 ** max(0, min(attempts - 1, 20))
        delay: timedelta = min(self.initial * factor, self.max)
        return delay


class DigestConfig(StrictModel):
    enabled: bool = Field(default=True, description="send a daily digest (the time is daemon.digest_at)")
    channel: Name | None = Field(
        default=None, description="channel that delivers it (default: the first email-capable channel)"
    )
    recipients: list[EmailAddress] = Field(default_factory=list, description="who receives every digest")
    subject: str = Field(
        default="spendwatch digest {date}: {headline}",
        description="subject line; {date} and {headline} are filled in",
    )
    top_accounts: int = Field(default=8, ge=1, le=50, description="accounts/projects listed per provider")
    max_incidents: int = Field(default=15, ge=1, le=100, description="incidents shown in full (the rest are counted)")
    charts: bool = Field(default=True, description="an inline PNG chart per incident")
    collapse_below: Severity = Field(
        default="high",
        description="incidents no longer alerting (resolved, acknowledged …) below this severity get one line",
    )
    max_collapsed: int = Field(default=12, ge=0, le=200, description="one-line incidents listed (the rest counted)")
    teams: bool = Field(
        default=True,
        description="send each team with recipients its own digest (its spend, incidents, jobs, actions); "
        "digest.recipients get the whole estate with a per-team table",
    )
    stale_after: Duration = Field(
        default=timedelta(days=2),
        description="a source whose newest data is older than this (beyond its settle lag) is flagged stale",
    )
    on_interrupted_send: Literal["assume-sent", "resend"] = Field(
        default="assume-sent",
        description="a send cut off after the message data started (crash): count it as sent, or send again",
    )
    claim_timeout: Duration = Field(
        default=timedelta(minutes=15),
        description="a digest claimed by a process that neither finished nor died is taken over after this",
    )
    retry: RetryPolicy = Field(default_factory=RetryPolicy)

    @model_validator(mode="after")
    def _subject_fields(self) -> DigestConfig:
        try:
            self.subject.format(date="2026-01-01", headline="x")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"subject: only {{date}} and {{headline}} can be filled in ({exc})") from None
        return self


class AlertsConfig(StrictModel):
    enabled: bool = True
    channels: list[Name] = Field(default_factory=list, description="channels every alert goes to")
    recipients: list[EmailAddress] = Field(default_factory=list, description="addresses for email channels")
    min_severity: Severity = Field(default="high", description="incidents at or above this alert at once")
    action_states: list[ActionState] = Field(
        default_factory=lambda: list[ActionState](["awaiting-approval", "done", "failed", "undone"]),
        description="kill-switch action states that alert at once",
    )
    max_age: Duration = Field(
        default=timedelta(days=2),
        description="incidents and action changes older than this are left to the digest (e.g. a first start)",
    )
    retry: RetryPolicy = Field(
        default_factory=lambda: RetryPolicy(initial=timedelta(seconds=30), max=timedelta(minutes=30))
    )

    def wants_severity(self, severity: str) -> bool:
        order = list(SEVERITY_ORDER)
        rank = order.index(severity) if severity in order else -1
        return rank >= order.index(self.min_severity)


class RouteConfig(StrictModel):
    """A team: its spend, incidents and actions (by owner, account or tag) go to its recipients and channels.

    A route named like a value of the team tag (``notify.team_tag``) needs no matchers.
    """

    name: Name
    owners: list[str] = Field(default_factory=list, description="owner globs, e.g. '*@ml.example.com'")
    accounts: list[str] = Field(default_factory=list, description="AWS account / GCP project id globs")
    tags: dict[str, list[str]] = Field(
        default_factory=dict, description="tag/label key → value globs, e.g. {cost-center: ['cc-41*']}"
    )
    recipients: list[EmailAddress] = Field(default_factory=list)
    channels: list[Name] = Field(default_factory=list, description="extra alert channels (e.g. the team's Slack)")
    digest: bool = Field(default=True, description="send the team the digest on days it lists their incidents")
    alerts: bool = Field(default=True, description="send the team immediate alerts for their incidents")

    @model_validator(mode="after")
    def _matches_something(self) -> RouteConfig:
        if not self.recipients and not self.channels:
            raise ValueError("a route needs recipients or channels to send to")
        return self

    def matches(self, owners: Iterable[str | None], accounts: Iterable[str | None]) -> bool:
        def hit(values: Iterable[str | None], patterns: list[str]) -> bool:
            return any(v and fnmatch.fnmatchcase(v.lower(), p.lower()) for v in values for p in patterns)

        return hit(owners, self.owners) or hit(accounts, self.accounts)

    def matches_team(self, teams: Iterable[str]) -> bool:
        """Whether this route is one of ``teams`` (a cost line's or an incident's teams)."""
        return self.name in set(teams)


class ActionPageConfig(StrictModel):
    """The page behind the digest's buttons (acknowledge, expected, approve, reject): docs/digest.md."""

    enabled: bool = Field(default=False, description="put signed action links in the digest and serve the page")
    base_url: str = Field(
        default="http://127.0.0.1:9465",
        description="what the links point at: the listener, or the ingress in front of it (https://…)",
    )
    bind: str = Field(default="127.0.0.1", description="the page's own listener (not the health port)")
    port: int = Field(default=9465, ge=0, le=65535, description="TCP port (0: any free port, logged)")
    key_env: str = Field(default="SPENDWATCH_LINK_KEY", description="environment variable holding the HMAC key")
    key_file: ConfigPath | None = Field(default=None, description="or a credentials file whose first line is the key")
    link_ttl: Duration = Field(default=timedelta(days=3), description="a link expires this long after it was sent")
    identity_header: str | None = Field(
        default=None,
        description="header an authenticating ingress sets to the signed-in address (e.g. X-Forwarded-Email): "
        "it must equal the link's recipient",
    )
    slack_signing_secret_env: str | None = Field(
        default=None,
        description="environment variable holding the Slack app's signing secret: alerts get buttons, "
        "POSTed to {base_url}/slack/actions",
    )

    @field_validator("base_url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} must start with http:// or https://")
        if any(c.isspace() or c in "<>|\"'`\\" for c in value):
            raise ValueError(f"{value!r}: a URL has no spaces, quotes, <, >, | or backslashes")
        return value.rstrip("/")


class NotifyConfig(StrictModel):
    """Where the digest and alerts go."""

    sender: EmailAddress = Field(
        default="spendwatch <spendwatch@localhost>", alias="from", description="the From address of every email"
    )
    channels: list[ChannelSpec] = Field(default_factory=list)
    digest: DigestConfig = Field(default_factory=DigestConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    routes: list[RouteConfig] = Field(default_factory=list, description="teams (see RouteConfig)")
    action_page: ActionPageConfig = Field(default_factory=ActionPageConfig)
    team_tag: str | None = Field(
        default="team",
        description="tag/label whose value names a cost line's team when no route claims it (null: routes only)",
    )

    model_config = StrictModel.model_config | {"populate_by_name": True}

    @model_validator(mode="after")
    def _references(self) -> NotifyConfig:
        names = [c.name for c in self.channels]
        if len(set(names)) != len(names):
            raise ValueError("channels: every channel needs a distinct name")
        by_name = {c.name: c for c in self.channels}
        if self.digest.channel is not None:
            channel = by_name.get(self.digest.channel)
            if channel is None:
                raise ValueError(f"digest.channel: no channel named {self.digest.channel!r} ({_known(names)})")
            if not CHANNELS.get(channel.type).sends_email:
                raise ValueError(f"digest.channel: {channel.name!r} is a {channel.type} channel; it cannot carry email")
        digest_channel = self.digest_channel()
        needs = digest_channel is not None and CHANNELS.get(digest_channel.type).needs_recipients
        if self.digest.enabled and digest_channel is not None and needs and not self.digest.recipients:
            raise ValueError(f"digest.recipients: {digest_channel.type} channel {digest_channel.name!r} needs them")
        for i, route in enumerate(self.routes):
            if not (route.owners or route.accounts or route.tags or self.team_tag):
                raise ValueError(
                    f"routes[{i}]: route {route.name!r} matches nothing: give owners, accounts or tags "
                    "(or set notify.team_tag so the tag value names it)"
                )
        for where, wanted in [("alerts.channels", self.alerts.channels)] + [
            (f"routes[{i}].channels", r.channels) for i, r in enumerate(self.routes)
        ]:
            for name in wanted:
                if name not in by_name:
                    raise ValueError(f"{where}: no channel named {name!r} ({_known(names)})")
        return self

    def channel(self, name: str) -> ChannelConfig:
        for channel in self.channels:
            if channel.name == name:
                return channel
        raise KeyError(name)

    def digest_channel(self) -> ChannelConfig | None:
        if self.digest.channel is not None:
            return self.channel(self.digest.channel)
        return next((c for c in self.channels if CHANNELS.get(c.type).sends_email), None)


def _known(names: list[str]) -> str:
    return "configured: " + ", ".join(names) if names else "no channels are configured"


def effective_notify(config: Any) -> NotifyConfig:
    """``config.notify``; with no channel configured, the digest goes to ``outbox/`` beside the store.

    A daemon that silently sends nothing is worse than one that writes its digests where a person
    can open them; a real deployment names its channels.
    """
    notify: NotifyConfig = config.notify
    if notify.channels:
        return notify
    from spendwatch.notify.channels import FolderChannelConfig

    outbox = FolderChannelConfig(name="outbox", path=config.store.path.parent / "outbox")
    return notify.model_copy(update={"channels": [outbox]})
