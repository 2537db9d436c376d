"""The secrets sweep: unique secrets planted in a config, every command and a daemon cycle run, and every
output, log, file, message and the store searched for them. Zero hits.

The secrets are live — the SMTP server checks the password, the webhooks receive the token in their
URL and headers, the hook command gets its ``env`` — so a hit-free sweep means they were used and
not leaked, not that they were never read.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml
from click.testing import CliRunner

from spendwatch.cli import main
from tests.doubles.smtp import SmtpServer, free_port
from tests.doubles.waits import PATIENCE

pytestmark = pytest.mark.slow  # runs first (tests/conftest.py): it is among the suite's longest files

SPENDWATCH = [sys.executable, "-c", "from spendwatch.cli import main; main()"]
PRINT_ENV = "import json, os, sys; sys.stdin.read(); print(json.dumps(dict(os.environ)))"


def _secret(kind: str) -> str:
    return f"sw{kind}{uuid.uuid4().hex[:12]}"


SECRETS = {
    "SMTP_PASSWORD": _secret("smtppw"),
    "CHAT_TOKEN": _secret("chattok"),
    "CHAT_HEADER": _secret("chathdr"),
    "HOOK_TOKEN": _secret("hooktok"),
    "HOOK_HEADER": _secret("hookhdr"),
    "HOOK_ENV": _secret("hookenv"),
    "DOWN_TOKEN": _secret("downtok"),
}
LITERAL = _secret("literal")  # written in the file itself, not interpolated


class Webhook:
    """A loopback receiver: keeps each POST's body apart from its path and headers (where secrets belong)."""

    def __init__(self) -> None:
        self.bodies: list[str] = []
        self.credentials: list[str] = []
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                webhook.bodies.append(body.decode())
                webhook.credentials.append(self.path + " " + " ".join(self.headers.values()))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    server = Webhook()
    yield server
    server.stop()


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpServer]:
    server = SmtpServer(tmp_path, security="starttls", users={"digest-bot": SECRETS["SMTP_PASSWORD"]})
    yield server
    server.stop()


def _config(folder: Path, smtp: SmtpServer, webhook: Webhook, health: int) -> dict[str, Any]:
    hook_rule = {"when": {"incident": {"min_severity": "high"}}, "do": "hook", "max_targets": 50}
    return {
        "store": {"path": "store.duckdb", "lock_timeout": "120s"},
        "sources": [{"name": "demo-estate", "type": "simulated", "days": 45, "every": "5s", "settle_lag": "1h"}],
        "notify": {
            "from": "spendwatch <spendwatch@example.com>",
            "channels": [
                {"name": "mail", "type": "smtp", "host": "127.0.0.1", "port": smtp.port, "security": "starttls",
                 "ca_file": str(smtp.ca_file), "username": "digest-bot", "password": "${SMTP_PASSWORD}"},
                {"name": "chat", "type": "webhook", "format": "mattermost",
                 "url": f"{webhook.base}/chat/${{CHAT_TOKEN}}?token=${{CHAT_TOKEN}}",
                 "headers": {"Authorization": "Bearer ${CHAT_HEADER}", "X-Literal": LITERAL}},
                {"name": "outbox", "type": "folder", "path": "outbox"},
            ],
            "digest": {"channel": "mail", "recipients": ["finops@example.com"]},
            "alerts": {"channels": ["chat", "outbox"], "min_severity": "high",
                       "action_states": ["awaiting-approval", "done", "failed"]},
        },
        "killswitch": {
            "approvers": ["lead"],
            "caps": {"max_actions_per_run": 50, "max_actions_per_hour": 200},
            "rules": [
                {**hook_rule, "name": "page-webhook", "how": "enforce",
                 "hook": {"url": f"{webhook.base}/hook?token=${{HOOK_TOKEN}}",
                          "headers": {"Authorization": "Bearer ${HOOK_HEADER}"}}},
                {**hook_rule, "name": "page-down", "how": "enforce",
                 "hook": {"url": "http://127.0.0.1:9/down?token=${DOWN_TOKEN}"}},
                {**hook_rule, "name": "page-command", "how": "enforce",
                 "hook": {"command": [sys.executable, "-c", PRINT_ENV], "env": {"PAGER_KEY": "${HOOK_ENV}"}}},
                {**hook_rule, "name": "page-approve", "how": "approve",
                 "hook": {"url": f"{webhook.base}/approve?token=${{HOOK_TOKEN}}&k={LITERAL}"}},
            ],
        },
        "daemon": {"timezone": "UTC", "digest_at": "00:00", "digest_check_every": "2s", "alerts_every": "3s",
                   "killswitch_every": "3s", "health": {"bind": "127.0.0.1", "port": health}},
    }  # fmt: skip


def _wait(condition: Callable[[], Any], what: str, proc: subprocess.Popen[bytes]) -> Any:
    deadline = time.monotonic() + PATIENCE * 2
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc.poll() is not None:
            raise AssertionError(f"the daemon exited ({proc.returncode}) while waiting for {what}")
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def _get(port: int, path: str) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=PATIENCE) as response:
            return str(response.read().decode())
    except urllib.error.HTTPError as exc:
        return str(exc.read().decode())
    except OSError:
        return ""


def _daemon_cycle(config: Path, folder: Path, smtp: SmtpServer, webhook: Webhook, port: int) -> list[tuple[str, str]]:
    log = folder / "daemon.log"
    env = {**os.environ, **SECRETS}
    proc = subprocess.Popen(
        [*SPENDWATCH, "run", "--config", str(config), "--log-json", "--log-level", "DEBUG"],
        stdout=subprocess.DEVNULL, stderr=log.open("ab"), env=env,
    )  # fmt: skip
    outputs = []
    try:
        _wait(smtp.received, "the digest", proc)
        _wait(lambda: any("page-webhook" in b or "kill switch" in b for b in webhook.bodies), "an action alert", proc)
        _wait(lambda: any("/hook?token=" in c for c in webhook.credentials), "the webhook hook", proc)
        for path in ("/healthz", "/readyz", "/metrics"):
            outputs.append((f"GET {path}", _get(port, path)))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=PATIENCE)
    return outputs


def _commands(store_ids: Callable[[], tuple[list[int], list[int]]], folder: Path) -> list[list[str]]:
    incidents, actions = store_ids()
    return [
        ["config", "schema"],
        ["collect"],
        ["detect"],
        ["anomalies", "list", "--all"],
        ["anomalies", "list", "--json", "--all"],
        *[["anomalies", "show", str(i)] for i in incidents[:5]],
        ["actions", "run"],
        ["actions", "list", "--limit", "500"],
        ["actions", "list", "--json", "--limit", "500"],
        ["actions", "status"],
        *[["actions", "show", str(a)] for a in actions],
        ["actions", "pause", "--as", "lead"],
        ["actions", "resume-all", "--as", "lead"],
        ["digest", "--to-dir", str(folder / "digest-files"), "--force"],
        ["digest", "--force"],
        ["costs", "export", "-o", str(folder / "export.csv")],
        ["costs", "export", "-o", str(folder / "export.parquet")],
        ["guard", "status"],
        ["doctor"],
        ["doctor", "--json"],
    ]


def _store_ids(store: Path) -> Callable[[], tuple[list[int], list[int]]]:
    def read() -> tuple[list[int], list[int]]:
        with duckdb.connect(str(store), read_only=True) as con:
            incidents = [r[0] for r in con.execute("SELECT id FROM anomalies ORDER BY id").fetchall()]
            actions = [r[0] for r in con.execute("SELECT id FROM actions ORDER BY id").fetchall()]
        return incidents, actions

    return read


def _store_dump(store: Path) -> str:
    with duckdb.connect(str(store), read_only=True) as con:
        tables = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()]
        return "\n".join(f"{t}: {con.execute(_select_all(t)).fetchall()}" for t in tables)


def _select_all(table: str) -> str:
    return 'SELECT * FROM "' + table.replace('"', '""') + '"'


def _files(folder: Path, config: Path) -> list[tuple[str, str]]:
    found = []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path != config:
            found.append((str(path.relative_to(folder)), path.read_bytes().decode("latin-1")))
    return found


def _hits(outputs: list[tuple[str, str]]) -> list[str]:
    secrets = [*SECRETS.values(), LITERAL]
    return [f"{secret} in {label}" for label, text in outputs for secret in secrets if secret in text]


def test_no_secret_leaves_the_config(
    tmp_path: Path, smtp: SmtpServer, webhook: Webhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    config = tmp_path / "spendwatch.yaml"
    config.write_text(yaml.safe_dump(_config(tmp_path, smtp, webhook, port), sort_keys=False))
    outputs = _daemon_cycle(config, tmp_path, smtp, webhook, port)

    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    runner = CliRunner()
    ids = _store_ids(tmp_path / "store.duckdb")
    results = []
    for args in _commands(ids, tmp_path):
        results.append((args, runner.invoke(main, ["--config", str(config), "--log-level", "DEBUG", *args])))
    _, actions = ids()
    decisions = [
        ["actions", "approve", str(actions[0]), "--as", "mallory"],
        ["actions", "undo", str(actions[0]), "--as", "lead"],
    ]
    with duckdb.connect(str(tmp_path / "store.duckdb"), read_only=True) as con:
        pending = [r[0] for r in con.execute("SELECT id FROM actions WHERE state = 'awaiting-approval'").fetchall()]
    assert len(pending) >= 2, "the approve rule left actions awaiting approval"
    decisions += [
        ["actions", "approve", str(pending[0]), "--as", "lead"],
        ["actions", "reject", str(pending[1]), "--as", "lead", "--note", "sweep"],
    ]
    for args in decisions:
        results.append((args, runner.invoke(main, ["--config", str(config), *args])))
    bad = tmp_path / "bad.yaml"
    bad.write_text(config.read_text().replace(f"port: {smtp.port}", "port: ${SMTP_PASSWORD}"))
    results.append((["config", "validate", "bad.yaml"], runner.invoke(main, ["config", "validate", str(bad)])))
    results.append((["config", "validate"], runner.invoke(main, ["config", "validate", str(config)])))
    bad.unlink()

    # Everything a person, a log reader, a chat or a mailbox could see.
    for args, result in results:
        assert "Traceback" not in result.output, (args, result.output)
        outputs.append((f"spendwatch {' '.join(args)}", result.output + (result.stderr if result.stderr_bytes else "")))
    outputs += [("webhook body", body) for body in webhook.bodies]
    outputs += [(f"email {m.message['Subject']}", m.data.decode("latin-1")) for m in smtp.received()]
    outputs += _files(tmp_path, config)
    outputs.append(("store tables", _store_dump(tmp_path / "store.duckdb")))

    # The secrets were live: the password logged in, the webhooks got their tokens and headers.
    assert smtp.received()
    credentials = " ".join(webhook.credentials)
    assert SECRETS["CHAT_TOKEN"] in credentials and SECRETS["CHAT_HEADER"] in credentials
    assert SECRETS["HOOK_TOKEN"] in credentials and SECRETS["HOOK_HEADER"] in credentials and LITERAL in credentials
    dump = _store_dump(tmp_path / "store.duckdb")
    assert "page-command" in dump and "PAGER_KEY" in dump  # the command hook ran and printed its env …
    assert "failed" in dump and "127.0.0.1:9" in dump  # … and the unreachable hook failed, named by host
    assert {"approve", "reject"} <= {args[1] for args, _ in results if args[0] == "actions"}
    assert any(json.loads(body).get("text") for body in webhook.bodies if body.startswith("{"))

    assert _hits(outputs) == []
