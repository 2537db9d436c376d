"""Chat messages: one structure, rendered per chat format, every field escaped in one place.

Alerts carry a ``ChatMessage`` whose strings are all *text* (a title, a summary, lines, a command):
none of them is markup. ``render_chat(message, format)`` is the only place markup is written, and
every string passes through ``escape(text, format)`` on the way in, so a billing currency, a tag, a
job name or a query cannot become a mention, a link, an image or a new line in any chat:

=============  ================================================================================
format         escaping
=============  ================================================================================
``slack``      ``&``, ``<``, ``>`` as entities in mrkdwn (``<!channel>``, ``<url|text>``,
               ``<@U…>`` cannot form); plain_text fields get a word joiner after ``<``
``mattermost`` Markdown: a word joiner (U+2060) after ``]`` and ``<`` and in ``![`` (links,
``rocketchat`` reference links, images, autolinks and HTML cannot form)
``teams``      the same, for Adaptive Card ``TextBlock`` Markdown (``[t](u)``, ``<at>``)
``relayed``    the same, for text a service passes on to chats, mail and phones (PagerDuty's
               summary and details reach Slack, Teams and email through its own integrations)
=============  ================================================================================

Action links (``ChatMessage.links``: acknowledge, mark expected, approve, reject — signed URLs of the
action page, ``notify.links``) are the only links spendwatch writes, from its own configured
``base_url`` and a URL-safe token, never from data: Slack gets buttons (``actions`` block, the token
as the button's value, answered at ``/slack/actions``) when a signing secret is configured, else
``<url|label>`` links; Mattermost and Rocket.Chat ``[label](url)``; Teams ``Action.OpenUrl``.

Every format also: drops control characters and bidirectional overrides, turns line breaks into
spaces (a field cannot forge a line of its own), puts a word joiner after an ``@`` that starts a
word (``@channel``, ``@all``, ``@here``, ``@someone`` never notify; ``ana@example.com`` is left
as it is), and cuts a field at ``MAX_FIELD`` characters.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Literal, get_args

from spendwatch.terminal import CharMap

ChatFormat = Literal["slack", "mattermost", "rocketchat", "teams"]
CHAT_FORMATS: tuple[str, ...] = get_args(ChatFormat)
RELAYED = "relayed"  # not a chat: text another service relays to chats (``escape`` only)
MAX_FIELD = 400
WORD_JOINER = "\u2060"
ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"
_MENTION = re.compile(r"(?<![A-Za-z0-9])@")
_ICONS = {"rotating_light": "🚨", "red_circle": "🔴", "large_orange_circle": "🟠", "warning": "⚠️",
          "raised_hand": "✋", "white_check_mark": "✅", "x": "❌", "leftwards_arrow_with_hook": "↩️",
          "gear": "⚙️"}  # fmt: skip


_SAFE_URL = re.compile(r"^https?://[A-Za-z0-9._~:/?#\[\]@!$&'()*+,;=%-]+$")


@dataclass(frozen=True)
class ChatLink:
    """A signed action link: ``label`` (spendwatch's own words), ``url`` on the action page, and the
    ``token`` a Slack button sends back instead of opening the URL (``button``)."""

    verb: str
    label: str
    url: str
    token: str
    button: bool = False

    def __post_init__(self) -> None:
        if not _SAFE_URL.match(self.url) or any(c in self.url for c in '<>|"\\ `'):
            raise ValueError(f"not a link spendwatch writes: {self.url[:80]!r}")


@dataclass(frozen=True)
class ChatMessage:
    """An alert as text. ``icon`` is an emoji short name chosen by spendwatch, never from data."""

    icon: str
    title: str
    summary: str = ""
    lines: tuple[tuple[str, str], ...] = ()  # (label, value); a label may be "" for a plain line
    footer: str = ""
    command: str = ""  # a spendwatch command line, shown as code
    links: tuple[ChatLink, ...] = ()  # signed action links (see the module docstring)


_PRINTABLE_OR_SPACE = CharMap(lambda ch: ch if ch.isprintable() else " ")


def plain_text(text: object, limit: int = MAX_FIELD) -> str:
    """One line of text with no control or bidi characters, cut at ``limit`` (what every format starts from).

    Non-printable means Unicode's "Other" and separator categories: C0/C1 controls, line breaks, and
    the format characters that include the bidirectional overrides (U+202E …) and zero-width ones.
    """
    value = str(text)
    if not value.isprintable():
        value = value.translate(_PRINTABLE_OR_SPACE)
    value = " ".join(value.split())
    if len(value) > limit:
        value = value[: limit - 1] + "…"
    return unicodedata.normalize("NFC", value)


def escape(text: object, chat_format: str, *, limit: int = MAX_FIELD, markup: bool = True) -> str:
    """``text`` made inert for ``chat_format``; ``markup=False`` for fields the chat shows as plain text."""
    value = _MENTION.sub("@" + WORD_JOINER, plain_text(text, limit))
    if chat_format == "slack":
        if markup:
            return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        return value.replace("<", "<" + WORD_JOINER)
    if chat_format in ("mattermost", "rocketchat", "teams", RELAYED):
        return (
            value.replace("]", "]" + WORD_JOINER).replace("![", "!" + WORD_JOINER + "[").replace("<", "<" + WORD_JOINER)
        )
    raise ValueError(f"unknown chat format {chat_format!r} (known: {', '.join(CHAT_FORMATS)})")


def render_chat(message: ChatMessage, chat_format: str) -> dict[str, Any]:
    """The JSON body a ``chat_format`` webhook takes, with every field of ``message`` escaped."""
    if chat_format == "slack":
        return _slack(message)
    if chat_format in ("mattermost", "rocketchat"):
        return {"text": _markdown(message, chat_format), "username": "spendwatch"}
    if chat_format == "teams":
        return _teams(message)
    raise ValueError(f"unknown chat format {chat_format!r} (known: {', '.join(CHAT_FORMATS)})")


def _slack(message: ChatMessage) -> dict[str, Any]:
    def e(text: str) -> str:
        return escape(text, "slack")

    icon = f":{message.icon}:"
    title = e(message.title)
    text = f"{icon} spendwatch: {title}"
    if message.summary:
        text += f" — {e(message.summary)}."
    text += "".join(f" {e(label)}: {e(value)}" if label else f" {e(value)}" for label, value in message.lines[:2])
    section = [f"*{e(message.summary)}*"] if message.summary else []
    section += [f"*{e(label)}:* {e(value)}" if label else e(value) for label, value in message.lines]
    context = e(message.footer) + (f" · `{e(message.command)}`" if message.command else "")
    header = escape(f"spendwatch: {message.title}", "slack", limit=150, markup=False)
    blocks: list[dict[str, Any]] = [{"type": "header", "text": {"type": "plain_text", "text": header}}]
    if section:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(section)}})
    buttons = [link for link in message.links if link.button]
    if buttons:
        blocks.append({"type": "actions", "block_id": "spendwatch-actions", "elements": [
            {"type": "button", "action_id": f"spendwatch-{link.verb}", "value": link.token,
             "text": {"type": "plain_text", "text": escape(link.label, "slack", markup=False)},
             **({"style": "primary"} if link.verb in ("acknowledge", "approve") else {}),
             **({"style": "danger"} if link.verb == "reject" else {})}
            for link in buttons
        ]})  # fmt: skip
    urls = [f"<{link.url}|{escape(link.label, 'slack')}>" for link in message.links if not link.button]
    if urls:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(urls)}]})
    if context.strip():
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    return {"text": text, "blocks": blocks, "unfurl_links": False, "unfurl_media": False}


def _markdown(message: ChatMessage, chat_format: str) -> str:
    def e(text: str) -> str:
        return escape(text, chat_format)

    out = [f"{_ICONS.get(message.icon, '')} **spendwatch: {e(message.title)}**".strip()]
    if message.summary:
        out.append(f"**{e(message.summary)}**")
    out += [f"**{e(label)}:** {e(value)}" if label else e(value) for label, value in message.lines]
    if message.links:
        out.append(" · ".join(f"[{e(link.label)}]({link.url})" for link in message.links))
    footer = e(message.footer) + (f" · `{e(message.command)}`" if message.command else "")
    if footer.strip():
        out.append(footer.strip(" ·"))
    return "\n".join(out)


def _teams(message: ChatMessage) -> dict[str, Any]:
    def e(text: str) -> str:
        return escape(text, "teams")

    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": f"spendwatch: {e(message.title)}", "weight": "Bolder", "size": "Medium",
         "wrap": True}
    ]  # fmt: skip
    if message.summary:
        body.append({"type": "TextBlock", "text": e(message.summary), "weight": "Bolder", "wrap": True})
    facts = [{"title": e(label), "value": e(value)} for label, value in message.lines if label]
    plain = [e(value) for label, value in message.lines if not label]
    if facts:
        body.append({"type": "FactSet", "facts": facts})
    body += [{"type": "TextBlock", "text": line, "wrap": True} for line in plain]
    footer = e(message.footer) + (f" · {e(message.command)}" if message.command else "")
    if footer.strip():
        body.append({"type": "TextBlock", "text": footer.strip(" ·"), "isSubtle": True, "wrap": True})
    card: dict[str, Any] = {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard",
                            "version": "1.4", "body": body}  # fmt: skip
    if message.links:
        card["actions"] = [
            {"type": "Action.OpenUrl", "title": e(link.label), "url": link.url} for link in message.links
        ]
    return {
        "type": "message",
        "summary": f"spendwatch: {e(message.title)}",
        "attachments": [{"contentType": ADAPTIVE_CARD, "contentUrl": None, "content": card}],
    }
