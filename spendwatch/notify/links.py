"""Signed action links: acknowledge, mark expected, approve, reject — from the email.

A link is ``{base_url}/a/{token}``; the token is an itsdangerous ``URLSafeTimedSerializer`` payload
(HMAC-SHA256 over the JSON, with its issue time) holding a random link id, the recipient it was sent
to, the verb and the subject (``incident:12`` / ``action:3``). So a link is

* **signed** — the key comes from ``$SPENDWATCH_LINK_KEY`` (``notify.action_page.key_env``) or a
  credentials file (``key_file``), never from the config itself; a changed byte is "not valid";
* **bound** to its recipient and its action — neither can be changed without breaking the signature,
  and behind an ingress that authenticates people (``identity_header``) the signed-in person must be
  the recipient;
* **expiring** — ``link_ttl`` after the digest was rendered;
* **single-use** — the page records the link id when it acts (``action_links_used``); a second use is
  refused, naming who used it and when.

Alerts carry them too: an email alert is sent to each recipient with their own links; a chat
alert's links are bound to the channel (``ChannelLinks``: who acts is who Slack or the ingress says).

The page itself (``notify.web``) never changes anything on GET: it shows what will happen and asks
for a POST carrying a CSRF token.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from datetime import timedelta
from email.utils import parseaddr
from typing import TYPE_CHECKING, Any, Literal

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer

from spendwatch.clock import Clock, SystemClock
from spendwatch.errors import ConfigError

if TYPE_CHECKING:
    from spendwatch.config import Config
    from spendwatch.notify.chat import ChatLink
    from spendwatch.notify.config import ActionPageConfig

Verb = Literal["acknowledge", "expected", "approve", "reject"]
INCIDENT_VERBS: tuple[Verb, ...] = ("acknowledge", "expected")
ACTION_VERBS: tuple[Verb, ...] = ("approve", "reject")
_LINK_SALT = "spendwatch.action-link.v1"
_CSRF_SALT = "spendwatch.action-csrf.v1"
LABELS = {"acknowledge": "Acknowledge", "expected": "Mark expected", "approve": "Approve", "reject": "Reject"}


@dataclass(frozen=True)
class Link:
    """What a valid token says."""

    id: str
    recipient: str
    verb: Verb
    subject: str

    @property
    def kind(self) -> str:
        return self.subject.partition(":")[0]

    @property
    def target_ids(self) -> tuple[int, ...]:
        """``incident:12`` → (12,); ``incident:12,16,8`` (one cause flagged by several monitors) → (12, 16, 8)."""
        return tuple(int(part) for part in self.subject.partition(":")[2].split(","))

    @property
    def target_id(self) -> int:
        return self.target_ids[0]


class LinkRefused(Exception):
    """A link the page will not act on; ``reason`` is what the page says, ``status`` its HTTP status."""

    def __init__(self, reason: str, status: int = 403) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def signing_key(page: ActionPageConfig, environ: dict[str, str] | None = None) -> bytes:
    """The HMAC key: ``$<key_env>`` or the first line of ``key_file``; at least 32 characters."""
    environ = dict(os.environ) if environ is None else environ
    key = environ.get(page.key_env, "")
    where = f"${page.key_env}"
    if not key and page.key_file is not None:
        where = f"notify.action_page.key_file {page.key_file}"
        try:
            key = page.key_file.read_text(encoding="utf-8").strip().splitlines()[0] if page.key_file.exists() else ""
        except (OSError, IndexError):
            key = ""
    if len(key) < 32:
        raise ConfigError(
            f"notify.action_page: no signing key of at least 32 characters in {where} "
            f"(generate one: python -c 'import secrets; print(secrets.token_urlsafe(48))')"
        )
    return key.encode()


class LinkSigner:
    """Issues and reads tokens; ``clock`` (injectable) dates them and decides expiry."""

    def __init__(self, key: bytes, ttl: timedelta, clock: Clock | None = None) -> None:
        now = (clock or SystemClock()).now

        class _Stamped(TimestampSigner):
            def get_timestamp(self) -> int:
                return int(now().timestamp())

        self._links = URLSafeTimedSerializer(key, salt=_LINK_SALT, signer=_Stamped)
        self._csrf = URLSafeTimedSerializer(key, salt=_CSRF_SALT, signer=_Stamped)
        self.ttl = ttl

    def token(self, recipient: str, verb: Verb, subject: str) -> str:
        # ``Ops <ops@example.com>`` → ``ops@example.com``; a channel (``channel:chat``) stays as it is.
        address = (parseaddr(recipient)[1] if "@" in recipient else recipient).lower() or recipient
        return str(self._links.dumps({"id": secrets.token_urlsafe(16), "r": address, "v": verb, "s": subject}))

    def read(self, token: str) -> Link:
        try:
            data = self._links.loads(token, max_age=int(self.ttl.total_seconds()))
        except SignatureExpired:
            raise LinkRefused("This link has expired. Newer digests carry fresh links.", 410) from None
        except BadSignature:
            raise LinkRefused("This link is not valid: it was changed or not issued by this spendwatch.", 400) from None
        try:
            link = Link(str(data["id"]), str(data["r"]), data["v"], str(data["s"]))
            if link.verb not in (*INCIDENT_VERBS, *ACTION_VERBS) or link.kind not in ("incident", "action"):
                raise ValueError(link.verb)
            if not link.target_ids or (link.kind == "action" and len(link.target_ids) != 1):
                raise ValueError(link.subject)  # a subject without numeric ids is not valid
        except (KeyError, TypeError, ValueError):
            raise LinkRefused("This link is not valid.", 400) from None
        return link

    def csrf(self, link: Link, nonce: str) -> str:
        """The form's token: binds the POST to this link and to the browser holding the nonce cookie."""
        return str(self._csrf.dumps({"l": link.id, "n": nonce}))

    def check_csrf(self, link: Link, value: str, nonce: str | None) -> None:
        try:
            data = self._csrf.loads(value, max_age=3600)
        except BadSignature:
            raise LinkRefused(
                "The confirmation form expired or was not sent by this page; open the link again."
            ) from None
        if not nonce or data.get("l") != link.id or not secrets.compare_digest(str(data.get("n")), nonce):
            raise LinkRefused("The confirmation did not come from the page this link opened; open the link again.")


class RecipientLinks:
    """The links one recipient's copy of the digest carries (``render`` calls ``incident``/``action``)."""

    def __init__(self, signer: LinkSigner, base_url: str, recipient: str, may_approve: bool) -> None:
        self.signer = signer
        self.base_url = base_url.rstrip("/")
        self.recipient = recipient
        self.may_approve = may_approve

    def url(self, verb: Verb, subject: str) -> str:
        return f"{self.base_url}/a/{self.signer.token(self.recipient, verb, subject)}"

    def text(self, pairs: list[tuple[str, str]]) -> str:
        """``Acknowledge: https://…`` lines for a plain-text email."""
        return "".join(f"{label}: {url}\n" for label, url in pairs)

    def incident(self, view: Any) -> list[tuple[str, str]]:
        """Buttons for a digest card (``IncidentView``) or an alert's ``Incident``: one click acknowledges
        every still-alerting incident of the card (the same cause seen by several monitors)."""
        ids = incident_ids(view)
        if not ids:
            return []
        subject = "incident:" + ",".join(str(i) for i in ids)
        return [(LABELS[v], self.url(v, subject)) for v in INCIDENT_VERBS]

    def action(self, action: Any) -> list[tuple[str, str]]:
        if action.state != "awaiting-approval" or not self.may_approve:
            return []
        return [(LABELS[v], self.url(v, f"action:{action.id}")) for v in ACTION_VERBS]


CHANNEL_PREFIX = "channel:"


class ChannelLinks:
    """The links one chat channel's alerts carry. A chat is shared, so the link is bound to the channel
    (``channel:<name>``), not a person: the person is who Slack says clicked the button (``buttons``,
    when a Slack signing secret is configured), or who the ingress in front of the page says is
    signed in (``identity_header``). Approve / reject ride along only when one of those can say who
    it is — the page checks them against ``killswitch.approvers``."""

    def __init__(self, signer: LinkSigner, base_url: str, channel: str, *, buttons: bool, knows_who: bool) -> None:
        self.signer = signer
        self.base_url = base_url.rstrip("/")
        self.recipient = CHANNEL_PREFIX + channel
        self.buttons = buttons
        self.knows_who = knows_who

    def _links(self, verbs: tuple[Verb, ...], subject: str) -> tuple[ChatLink, ...]:
        from spendwatch.notify.chat import ChatLink

        out = []
        for verb in verbs:
            token = self.signer.token(self.recipient, verb, subject)
            out.append(ChatLink(verb, LABELS[verb], f"{self.base_url}/a/{token}", token, button=self.buttons))
        return tuple(out)

    def incident(self, item: Any) -> tuple[ChatLink, ...]:
        ids = incident_ids(item)
        if not ids:
            return ()
        return self._links(INCIDENT_VERBS, "incident:" + ",".join(str(i) for i in ids))

    def action(self, action: Any) -> tuple[ChatLink, ...]:
        if action.state != "awaiting-approval" or not (self.buttons or self.knows_who):
            return ()
        return self._links(ACTION_VERBS, f"action:{action.id}")


def channel_links(config: Config, channel: Any, signer: LinkSigner | None) -> ChannelLinks | None:
    """The links a chat channel's alerts carry, or ``None`` (action page off, or not a chat channel)."""
    page = config.notify.action_page
    if signer is None or not page.enabled or getattr(channel, "type", None) != "webhook":
        return None
    buttons = bool(page.slack_signing_secret_env) and getattr(channel, "format", "slack") == "slack"
    knows_who = page.identity_header is not None
    return ChannelLinks(signer, page.base_url, channel.name, buttons=buttons, knows_who=knows_who)


def incident_ids(item: Any) -> list[int]:
    """The alerting incident ids behind a digest card (its own and its same-cause ones) or one incident."""
    if hasattr(item, "alerting_ids"):
        return list(item.alerting_ids)
    return [item.id] if item.is_alerting else []


def approvers(config: Config) -> list[str]:
    """Who may approve or reject kill-switch actions (``killswitch.approvers``), lower-cased."""
    listed = getattr(config.killswitch, "approvers", None) or []
    return [str(a).lower() for a in listed]


def may_approve(config: Config, who: str) -> bool:
    address = parseaddr(who)[1].lower() or who.lower()
    return address in approvers(config) or who.lower() in approvers(config)


def signer_for(config: Config, environ: dict[str, str] | None = None, clock: Clock | None = None) -> LinkSigner | None:
    page = config.notify.action_page
    if not page.enabled:
        return None
    return LinkSigner(signing_key(page, environ), page.link_ttl, clock)


def links_for(config: Config, recipient: str, *, signer: LinkSigner | None = None) -> RecipientLinks | None:
    """The recipient's links, or ``None`` when the action page is off."""
    page = config.notify.action_page
    if not page.enabled:
        return None
    signer = signer or signer_for(config)
    assert signer is not None
    return RecipientLinks(signer, page.base_url, recipient, may_approve(config, recipient))


class AlertLinks:
    """What an alert pass hands each alert: links per email recipient and per chat channel."""

    def __init__(self, config: Config, signer: LinkSigner) -> None:
        self.config = config
        self.signer = signer

    def recipient(self, address: str) -> RecipientLinks:
        page = self.config.notify.action_page
        return RecipientLinks(self.signer, page.base_url, address, may_approve(self.config, address))

    def channel(self, channel: Any) -> ChannelLinks | None:
        return channel_links(self.config, channel, self.signer)


def alert_links(config: Config, clock: Clock | None = None, environ: dict[str, str] | None = None) -> AlertLinks | None:
    """Links for alerts, or ``None`` when the action page is off."""
    signer = signer_for(config, environ, clock)
    return AlertLinks(config, signer) if signer is not None else None
