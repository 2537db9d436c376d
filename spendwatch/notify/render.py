"""Digest and alert emails: Jinja templates → multipart MIME (text + HTML + inline PNG charts).

The HTML uses inline styles and tables only (Gmail strips ``<style>`` in some views, Outlook's
Word engine ignores most CSS) and no JavaScript. Every value that comes from data — labels, job
names, query text, owners — goes through Jinja's autoescaping, so a job named ``<script>`` arrives
as text. The message is ``multipart/alternative`` (plain text first, then ``multipart/related`` with
the HTML and its images referenced by ``cid:``); ``preview`` renders the same HTML with ``data:``
URIs so it can be opened straight from disk.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from markupsafe import Markup

from spendwatch import __version__
from spendwatch.money import format_money
from spendwatch.notify.channels import OutgoingEmail
from spendwatch.notify.digest import Digest

MAX_CHARTS = 8  # each chart is ~15-25 kB; past eight the email gets heavy for phones
_ENCODED_WORD = re.compile(r"=\?")


def _printable(value: Any, keep: str = "") -> Any:
    """Data text without control, bidi-override or zero-width characters (they become spaces).

    Jinja's ``finalize``: every ``{{ … }}`` of both templates passes through it, so a tag value
    carrying ESC sequences or U+202E reaches neither the text part nor the HTML part.
    """
    if not isinstance(value, str) or isinstance(value, Markup) or value.isprintable():
        return value
    return "".join(ch if ch.isprintable() or ch in keep else " " for ch in value)


def _oneline(value: Any) -> str:
    """Collapse newlines and control characters (a label must not break a line or a header)."""
    return " ".join(_printable(str(value)).split())


def header_value(value: Any) -> str:
    """A header value from data: one line, and no RFC 2047 encoded word a mail reader would decode
    into a line break (``=?utf-8?q?=0D=0ABcc:…?=``; Python before 3.11.10 re-folds it raw)."""
    return _ENCODED_WORD.sub("=\u2060?", _oneline(value))


def _pct(value: float | None, signed: bool = True) -> str:
    if value is None:
        return "–"
    sign = "+" if signed and value > 0 else ("−" if value < 0 else "")
    return f"{sign}{abs(value):.0%}"


def _local(value: datetime | None, timezone: str, fmt: str = "%Y-%m-%d %H:%M") -> str:
    if value is None:
        return "–"
    return value.astimezone(ZoneInfo(timezone)).strftime(fmt)


def _utc(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M UTC") -> str:
    return "–" if value is None else value.strftime(fmt)


def _environment(html: bool) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("spendwatch.notify", "templates"),
        autoescape=html,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        # The HTML keeps a query's own line breaks (shown pre-wrapped); the text part keeps none.
        finalize=(lambda value: _printable(value, "\n")) if html else _printable,
    )
    env.filters.update(money=format_money, pct=_pct, local=_local, utc=_utc, oneline=_oneline)
    return env


_HTML = _environment(html=True)
_TEXT = _environment(html=False)


@dataclass(frozen=True)
class RenderedDigest:
    subject: str
    text: str
    html: str
    preview_html: str
    images: dict[str, bytes]


class NoLinks:
    """Links for a recipient's buttons; this one has none (no action page configured): CLI hints instead."""

    def incident(self, incident: Any) -> list[tuple[str, str]]:
        return []

    def action(self, action: Any) -> list[tuple[str, str]]:
        return []


def render_digest(digest: Digest, subject_template: str, *, charts: bool = True, links: Any = None) -> RenderedDigest:
    """``links``: per-recipient signed links (``spendwatch.notify.links.RecipientLinks``), or none."""
    images = _charts(digest) if charts else {}
    context = {"d": digest, "version": __version__, "has_image": images.__contains__, "links": links or NoLinks()}
    html = _HTML.get_template("digest.html.j2").render(**context, image_src=lambda cid: f"cid:{cid}")
    preview = _HTML.get_template("digest.html.j2").render(**context, image_src=lambda cid: _data_uri(images[cid]))
    text = _TEXT.get_template("digest.txt.j2").render(**context)
    subject = _oneline(subject_template.format(date=digest.day.isoformat(), headline=digest.headline))
    return RenderedDigest(subject, text, html, preview, images)


def _charts(digest: Digest) -> dict[str, bytes]:
    from spendwatch.notify.charts import incident_chart

    images = {}
    for view in digest.incidents[:MAX_CHARTS]:
        if view.chart_cid is None:
            continue
        incident = view.incident
        png = incident_chart(
            incident.points,
            incident.billing_currency,
            granularity=incident.granularity,
            window=(incident.first_seen, incident.last_seen),
        )
        if png is not None:
            images[view.chart_cid] = png
    return images


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def new_message_id(domain: str | None = None) -> str:
    return make_msgid(idstring="spendwatch", domain=domain or "spendwatch.local")


def build_email(
    *,
    subject: str,
    text: str,
    html: str | None,
    sender: str,
    recipients: tuple[str, ...],
    message_id: str,
    images: dict[str, bytes] | None = None,
    headers: dict[str, str] | None = None,
    preview_html: str | None = None,
) -> OutgoingEmail:
    message = EmailMessage()
    message["Subject"] = header_value(subject)
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = message_id
    message["Auto-Submitted"] = "auto-generated"
    message["X-Mailer"] = f"spendwatch {__version__}"
    for name, value in (headers or {}).items():
        message[name] = header_value(value)
    message.set_content(_printable(text, "\n\t"), subtype="plain", charset="utf-8")
    if html is not None:
        message.add_alternative(html, subtype="html", charset="utf-8")
        html_part = message.get_payload()[1]  # type: ignore[index]
        assert isinstance(html_part, EmailMessage)
        for cid, png in (images or {}).items():
            html_part.add_related(png, maintype="image", subtype="png", cid=f"<{cid}>", filename=f"{cid}.png")
    return OutgoingEmail(message, sender, recipients, preview_html)


def digest_email(
    digest: Digest,
    *,
    subject_template: str,
    sender: str,
    recipients: tuple[str, ...],
    message_id: str,
    charts: bool = True,
    links: Any = None,
) -> tuple[OutgoingEmail, RenderedDigest]:
    rendered = render_digest(digest, subject_template, charts=charts, links=links)
    email = build_email(
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        sender=sender,
        recipients=recipients,
        message_id=message_id,
        images=rendered.images,
        headers={"X-Spendwatch-Digest-Date": digest.day.isoformat(), "X-Spendwatch-Digest-For": digest.audience},
        preview_html=rendered.preview_html,
    )
    return email, rendered


def digest_filename(day: date, audience: str | None = None) -> str:
    """``spendwatch-digest-2026-12-04`` (FinOps) or ``spendwatch-digest-2026-12-04-team-ml-research``."""
    if audience is None or audience == "finops":
        return f"spendwatch-digest-{day.isoformat()}"
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", audience).strip("-.") or "team"
    return f"spendwatch-digest-{day.isoformat()}-team-{safe}"


def dedupe_addresses(addresses: Iterable[str]) -> tuple[str, ...]:
    """Each mailbox once (compared by its address, case-insensitively), in first-seen order."""
    seen: set[str] = set()
    out: list[str] = []
    for address in addresses:
        key = parseaddr(address)[1].lower()
        if key and key not in seen:
            seen.add(key)
            out.append(address)
    return tuple(out)
