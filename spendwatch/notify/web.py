"""The action page: where the digest's buttons (and Slack's) land. A listener of its own, not the health port.

``GET /a/<token>`` checks the link (signature, expiry, not used yet, the signed-in person when an
ingress says who it is) and shows what will happen, with a form; it changes nothing. ``POST
/a/<token>`` checks all that again plus the CSRF token (a signed value bound to the link and to a
``SameSite=Strict`` cookie set by the GET), and — for approve / reject — that the recipient is on
``killswitch.approvers``; then it records the link as used and acts through the same functions as the
CLI (``give_feedback``, ``KillSwitch.approve`` / ``reject``), which journal who and when. Every refusal is
a page saying why, with a 4xx status.

``POST /slack/actions`` takes Slack's interactive button payloads when a signing secret is configured:
``X-Slack-Signature`` must be the HMAC-SHA256 of ``v0:<timestamp>:<body>`` and the timestamp within
five minutes (replays are refused); the button carries the same kind of signed token, bound to the
chat channel, and the person is the Slack user (``slack:<username>``, which is what
``killswitch.approvers`` must list to approve). The outcome goes back to the payload's
``response_url`` (Slack's hooks host only).

A chat link opened in a browser (``channel:<name>``) acts as the person the ingress says is signed
in (``identity_header``), else as the channel, which may acknowledge but not approve.

Listens on 127.0.0.1 by default; to reach it from a phone put it behind an ingress that
authenticates people (and set ``identity_header``) — docs/digest.md.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from spendwatch.errors import SpendwatchError
from spendwatch.notify.links import ACTION_VERBS, CHANNEL_PREFIX, LABELS, Link, LinkRefused, LinkSigner, may_approve
from spendwatch.store import Store

if TYPE_CHECKING:
    from spendwatch.clock import Clock
    from spendwatch.config import Config

log = logging.getLogger("spendwatch.notify.web")
COOKIE = "sw_csrf"
SLACK_MAX_AGE = 300
MAX_BODY = 64 * 1024


def _page(title: str, body: str, status: int = 200) -> tuple[int, str]:
    return status, (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)} · spendwatch</title></head>"
        "<body style='margin:0;background:#f3f4f6;font-family:-apple-system,Segoe UI,Roboto,Arial,sans-serif;'>"
        "<div style='max-width:560px;margin:24px auto;background:#fff;border:1px solid #e5e7eb;border-radius:8px;"
        f"padding:20px 24px;'><div style='font-size:12px;color:#6b7280;text-transform:uppercase;'>spendwatch</div>"
        f"<h1 id='title' style='font-size:20px;margin:6px 0 12px 0;color:#111827;'>{html.escape(title)}</h1>"
        f"{body}</div></body></html>"
    )


def _refusal(reason: str, status: int) -> tuple[int, str]:
    return _page("This link cannot be used", f"<p id='reason'>{html.escape(reason)}</p>", status)


_CSP = "default-src 'none'; form-action 'self'; style-src 'unsafe-inline'"


class ActionService:
    """What the page does, apart from HTTP: read links, describe them, act on them."""

    def __init__(self, config: Config, store: Store, clock: Clock, signer: LinkSigner) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.signer = signer

    def check(self, token: str, signed_in: str | None) -> tuple[Link, str]:
        """The link and who acts with it, or ``LinkRefused`` saying why not.

        A digest or email-alert link is bound to its recipient (who acts); behind an authenticating
        ingress the signed-in person must be that recipient. A chat link is bound to its channel:
        whoever the ingress says is signed in acts, else the channel — which may acknowledge, but
        never approve or reject (nobody would know who did)."""
        link = self.signer.read(token)
        who = signed_in.strip().lower() if signed_in and signed_in.strip() else None
        if link.recipient.startswith(CHANNEL_PREFIX):
            actor = who or link.recipient
            if link.verb in ACTION_VERBS and who is None:
                raise LinkRefused(
                    f"This link came through the chat channel {link.recipient[len(CHANNEL_PREFIX) :]}: to "
                    f"{link.verb}, spendwatch must know who you are. Use the chat's own button, or your digest."
                )
        else:
            if who is not None and who != link.recipient:
                raise LinkRefused(
                    f"This link was sent to {link.recipient}; you are signed in as {who}. "
                    "Use the link from your own digest."
                )
            actor = link.recipient
        self.refuse_used(link)
        if link.verb in ACTION_VERBS and not self._may_approve(actor):
            raise LinkRefused(f"{actor} is not on killswitch.approvers: only those listed may {link.verb}.")
        return link, actor

    def refuse_used(self, link: Link) -> None:
        used = self.store.query(
            "SELECT recipient, used_at, outcome FROM action_links_used WHERE link_id = ?", [link.id]
        )
        if used:
            who, at, outcome = used[0]
            raise LinkRefused(f"This link was already used by {who} at {at:%Y-%m-%d %H:%M} UTC ({outcome}).", 409)

    def _may_approve(self, who: str) -> bool:
        check = getattr(self.config.killswitch, "may_approve", None)
        return bool(check(who)) if callable(check) else may_approve(self.config, who)

    def describe(self, link: Link) -> str:
        """What will happen, in words (escaped by the caller)."""
        if link.kind == "incident":
            from spendwatch.detect.incidents import get_incident
            from spendwatch.money import format_money

            what = {
                "acknowledge": "stops alerting on it",
                "expected": "stops alerting and makes its new level the series' baseline",
            }[link.verb]
            described = []
            for target in link.target_ids:
                incident = get_incident(self.store, target)
                impact = format_money(incident.impact, incident.billing_currency, signed=True)
                baseline = "over its cap" if incident.kind == "guard" else "over expected"
                described.append(
                    f"incident #{incident.id} ({incident.severity} {incident.kind}, {impact} {baseline} on "
                    f"{incident.title}; status {incident.status})"
                )
            if len(described) == 1:
                return f"{LABELS[link.verb]} {described[0]}: this {what}."
            return (
                f"{LABELS[link.verb]} {len(described)} incidents with one cause — {'; '.join(described)}: "
                f"this {what.replace('it', 'each', 1)}."
            )
        from spendwatch.killswitch.journal import get_action

        action = get_action(self.store, link.target_id)
        if link.verb == "approve":
            return (
                f"Approve action #{action.id}: {action.summary} (rule {action.rule}). The next kill-switch pass "
                "carries it out, after re-reading the target."
            )
        return f"Reject action #{action.id}: {action.summary} (rule {action.rule}). Nothing is done."

    def act(self, link: Link, actor: str) -> str:
        """Claim the link (single use), then do it; returns the outcome line."""
        now = self.clock.now()
        with self.store.transaction() as con:
            if con.execute("SELECT 1 FROM action_links_used WHERE link_id = ?", [link.id]).fetchone():
                raise LinkRefused("This link was already used.", 409)
            con.execute(
                "INSERT INTO action_links_used VALUES (?, ?, ?, ?, ?, ?)",
                [link.id, actor, link.verb, link.subject, now, "started"],
            )
        try:
            outcome = self._do(link, actor)
        except SpendwatchError as exc:
            outcome = f"refused: {exc}"
        with self.store.transaction() as con:
            con.execute("UPDATE action_links_used SET outcome = ? WHERE link_id = ?", [outcome[:500], link.id])
        log.info("action page: %s %s by %s: %s", link.verb, link.subject, actor, outcome)
        return outcome

    def _do(self, link: Link, actor: str) -> str:
        if link.kind == "incident":
            from spendwatch.detect.incidents import give_feedback

            verdict = "acknowledged" if link.verb == "acknowledge" else "expected"
            done = [
                give_feedback(self.store, target, verdict, actor=actor, note="from a spendwatch link")
                for target in link.target_ids
            ]
            return f"{', '.join(f'incident #{i.id}' for i in done)} {verdict} by {actor}"
        from spendwatch.killswitch.engine import KillSwitch

        engine = KillSwitch(self.config.killswitch, self.store, self.clock)
        if link.verb == "approve":
            # Recorded now; the daemon's next kill-switch pass carries it out (re-read and checked first),
            # so a page request never waits on a cloud API.
            record = engine.approve(link.target_id, actor, execute=False)
            return f"action #{record.id} approved by {actor}; the next kill-switch pass carries it out"
        record = engine.reject(link.target_id, actor, "from the digest link")
        return f"action #{record.id} rejected by {actor}"


class ActionPage:
    """The listener: ``start()`` binds and serves on a daemon thread; ``stop()`` shuts it down."""

    def __init__(self, service: ActionService, *, bind: str, port: int, identity_header: str | None,
                 slack_secret: str | None = None, respond: Callable[[str, dict[str, Any]], None] | None = None,
                 now: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.service = service
        self.identity_header = identity_header
        self.slack_secret = slack_secret
        self.respond = respond or slack_respond
        self.now = now
        self._server = ThreadingHTTPServer((bind, port), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, name="action-page", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        page = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "spendwatch"

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("action page: " + format, *args)

            def do_GET(self) -> None:
                token = self._token()
                if token is None:
                    return self._send(*_page("Not found", "<p>Nothing here.</p>", 404))
                status, text, nonce = page.get(token, self._signed_in())
                return self._send(status, text, nonce=nonce)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    return self._send(*_page("Too large", "<p>Request too large.</p>", 413))
                body = self.rfile.read(length)
                if self.path == "/slack/actions":
                    status, payload = page.slack(self.headers, body)
                    return self._send(status, json.dumps(payload), content_type="application/json")
                token = self._token()
                if token is None:
                    return self._send(*_page("Not found", "<p>Nothing here.</p>", 404))
                form = parse_qs(body.decode("utf-8", "replace"))
                cookies = SimpleCookie(self.headers.get("Cookie") or "")
                nonce = cookies[COOKIE].value if COOKIE in cookies else None
                csrf = (form.get("csrf") or [""])[0]
                return self._send(*page.post(token, csrf, nonce, self._signed_in()))

            def _token(self) -> str | None:
                path = self.path.split("?", 1)[0]
                if not path.startswith("/a/") or len(path) > 2048:
                    return None
                return path[3:] or None

            def _signed_in(self) -> str | None:
                return self.headers.get(page.identity_header) if page.identity_header else None

            def _send(self, status: int, text: str, *, nonce: str | None = None,
                      content_type: str = "text/html; charset=utf-8") -> None:  # fmt: skip
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                self.send_header("X-Frame-Options", "DENY")
                self.send_header("Referrer-Policy", "no-referrer")
                self.send_header("Content-Security-Policy", _CSP)
                if nonce is not None:
                    self.send_header("Set-Cookie", f"{COOKIE}={nonce}; HttpOnly; SameSite=Strict; Path=/a/")
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def get(self, token: str, signed_in: str | None) -> tuple[int, str, str | None]:
        """(status, page, CSRF nonce for the cookie): shows what will happen; changes nothing."""
        try:
            link, actor = self.service.check(token, signed_in)
            what = self.service.describe(link)
        except LinkRefused as refused:
            return (*_refusal(refused.reason, refused.status), None)
        except SpendwatchError as exc:
            return (*_refusal(str(exc), 404), None)
        nonce = secrets.token_urlsafe(24)
        csrf = self.service.signer.csrf(link, nonce)
        body = (
            f"<p id='what'>{html.escape(what)}</p>"
            f"<p style='color:#6b7280;font-size:13px;'>As {html.escape(actor)}. Nothing happens until you "
            "confirm; the journal records who and when.</p>"
            f"<form method='post'><input type='hidden' name='csrf' value='{html.escape(csrf)}'>"
            f"<button id='confirm' type='submit' style='font-size:16px;padding:8px 16px;background:#1d4ed8;"
            f"color:#fff;border:0;border-radius:5px;'>{html.escape(LABELS[link.verb])}</button></form>"
        )
        return (*_page(f"{LABELS[link.verb]}?", body), nonce)

    def post(self, token: str, csrf: str, nonce: str | None, signed_in: str | None) -> tuple[int, str]:
        try:
            link, actor = self.service.check(token, signed_in)
            self.service.signer.check_csrf(link, csrf, nonce)
            outcome = self.service.act(link, actor)
        except LinkRefused as refused:
            return _refusal(refused.reason, refused.status)
        ok = not outcome.startswith("refused")
        return _page("Done" if ok else "Not done", f"<p id='outcome'>{html.escape(outcome)}</p>", 200 if ok else 403)

    def slack(self, headers: Any, body: bytes) -> tuple[int, dict[str, Any]]:
        """A Slack button click: signature and timestamp first, then the button's signed token.

        Slack ignores the body of this answer for block actions: the outcome goes to the payload's
        ``response_url`` (``respond``), in the background so Slack gets its 200 at once."""
        if not self.slack_secret:
            return 404, {"text": "Slack actions are not configured"}
        refusal = verify_slack(self.slack_secret, headers, body, now=self.now)
        if refusal is not None:
            log.warning("action page: a /slack/actions request was refused: %s", refusal)
            return 401, {"text": refusal}
        try:
            payload = json.loads(parse_qs(body.decode())["payload"][0])
            token = str(payload["actions"][0]["value"])
            user = "slack:" + str(payload["user"].get("username") or payload["user"]["id"])
            response_url = str(payload.get("response_url") or "")
        except (KeyError, IndexError, ValueError, TypeError, AttributeError, UnicodeDecodeError):
            return 400, {"text": "not a Slack block action"}
        try:
            link = self.service.signer.read(token)
            if not link.recipient.startswith(CHANNEL_PREFIX):
                raise LinkRefused("This button was not sent to a chat channel.")
            self.service.refuse_used(link)
            if link.verb in ACTION_VERBS and not self.service._may_approve(user):
                raise LinkRefused(f"{user} is not on killswitch.approvers: only those listed may {link.verb}.")
            outcome = self.service.act(link, user)
            answer = {"response_type": "in_channel", "replace_original": False, "text": outcome}
        except LinkRefused as refused:
            answer = {"response_type": "ephemeral", "replace_original": False, "text": refused.reason}
        if response_url:
            threading.Thread(target=self.respond, args=(response_url, answer), daemon=True).start()
        return 200, answer


def slack_respond(url: str, answer: dict[str, Any]) -> None:
    """POST ``answer`` to a Slack ``response_url`` — only Slack's own hooks host, over HTTPS."""
    import urllib.error
    import urllib.request
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme != "https" or parts.hostname != "hooks.slack.com":
        log.warning("action page: not answering a response_url outside https://hooks.slack.com/")
        return
    request = urllib.request.Request(
        url, data=json.dumps(answer).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read(200)
    except (urllib.error.URLError, OSError) as exc:
        log.warning("action page: could not answer Slack: %s", getattr(exc, "reason", exc))


def verify_slack(secret: str, headers: Any, body: bytes, *, now: Callable[[], float]) -> str | None:
    """Slack's request signing: ``v0=`` HMAC-SHA256 of ``v0:<ts>:<body>``, timestamp within 5 minutes."""
    stamp = headers.get("X-Slack-Request-Timestamp") or ""
    signature = headers.get("X-Slack-Signature") or ""
    if not stamp.isdigit() or abs(now() - int(stamp)) > SLACK_MAX_AGE:
        return "stale or missing timestamp"
    expected = "v0=" + hmac.new(secret.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256).hexdigest()
    return None if hmac.compare_digest(expected, signature) else "bad signature"


def action_page(config: Config, store: Store, clock: Clock, environ: dict[str, str] | None = None) -> ActionPage | None:
    """The configured page (not started), or ``None`` when ``notify.action_page.enabled`` is off."""
    import os

    from spendwatch.notify.links import signer_for

    signer = signer_for(config, environ, clock)
    if signer is None:
        return None
    settings = config.notify.action_page
    env = dict(os.environ) if environ is None else environ
    slack = env.get(settings.slack_signing_secret_env) if settings.slack_signing_secret_env else None
    service = ActionService(config, store, clock, signer)
    return ActionPage(service, bind=settings.bind, port=settings.port, identity_header=settings.identity_header,
                      slack_secret=slack)  # fmt: skip
