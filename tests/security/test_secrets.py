"""Hole 5: secrets. A hook URL with ``?token=`` was stored in the journal and shown by ``actions show``,
in the digest and in failed-action alerts; ``config validate`` echoed interpolated values in errors;
hook processes inherited the daemon's whole environment.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from spendwatch.cli import main
from spendwatch.config import load_config, parse_config
from spendwatch.errors import ConfigError
from spendwatch.killswitch.engine import run_killswitch
from spendwatch.killswitch.journal import action_events, list_actions
from spendwatch.notify.alerts import action_alert
from spendwatch.notify.config import NotifyConfig
from spendwatch.secrets import redact_url
from spendwatch.store import Store
from tests.doubles.clock import FixedClock
from tests.killswitch.factories import NOW, job, rule, settings

TOKEN = "tok-3b1f9c2e7d"
HEADER = "Bearer hdr-8c2d41aa9e"
PASSWORD = "pw-5e7a90c1b3"


def _everything(store: Store) -> str:
    """Every journal row and event, as text."""
    rows = [json.dumps(a.__dict__, default=str) for a in list_actions(store)]
    rows += [json.dumps(e.__dict__, default=str) for a in list_actions(store) for e in action_events(store, a.id)]
    return "\n".join(rows)


@pytest.mark.parametrize("how", ["dry-run", "enforce"])
def test_a_hook_url_token_never_reaches_the_journal_or_an_alert(tmp_path: Path, how: str) -> None:
    # 127.0.0.1:9 (discard) refuses the connection: the enforce run fails, and its error is journaled.
    url = f"http://127.0.0.1:9/hooks/{TOKEN}?token={TOKEN}"
    spec = rule("page", do="hook", how=how, when={"job": {}}, hook={"url": url, "headers": {"Authorization": HEADER}})
    clock = FixedClock(NOW)
    store = Store(tmp_path / "s.duckdb", clock=clock)
    run_killswitch(settings([spec]), store, clock, jobs=[job("bigquery", "bquxjob_1", provider="gcp")])
    [action] = list_actions(store)
    assert action.state == ("skipped" if how == "dry-run" else "failed")
    journal = _everything(store)
    assert "127.0.0.1" in journal  # the hook is still named, by its host
    assert TOKEN not in journal and "hdr-8c2d41aa9e" not in journal
    alert = action_alert(action, NotifyConfig(), ("ops@example.com",))
    assert TOKEN not in json.dumps(alert.payload) and TOKEN not in alert.email.message.as_string()  # type: ignore[union-attr]


def test_hook_config_keeps_url_and_headers_secret() -> None:
    spec = rule("page", do="hook", when={"job": {}},
                hook={"url": f"https://hooks.example.com/x?token={TOKEN}", "headers": {"Authorization": HEADER}})  # fmt: skip
    config = settings([spec])
    dumped = repr(config) + str(config) + config.model_dump_json()
    assert TOKEN not in dumped and "hdr-8c2d41aa9e" not in dumped
    hook = config.rules[0].hook
    assert hook is not None and hook.url is not None
    assert hook.url.get_secret_value().endswith(TOKEN)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"https://hooks.slack.com/services/T0/B0/{TOKEN}", "https://hooks.slack.com/…"),
        (f"https://user:{PASSWORD}@relay.example.com:8443/p?token={TOKEN}#f", "https://relay.example.com:8443/…"),
        ("https://hooks.example.com", "https://hooks.example.com"),
        ("not a url", "(a URL)"),
    ],
)
def test_redact_url_keeps_only_scheme_and_host(url: str, shown: str) -> None:
    assert redact_url(url) == shown


CONFIG = """store: {{path: s.duckdb}}
sources: [{{name: demo, type: simulated}}]
notify:
  channels:
    - {{name: mail, type: smtp, host: smtp.example.com, port: {port}, username: u, password: "${{SMTP_PASSWORD}}"}}
  digest: {{recipients: [finops@example.com]}}
"""


def test_config_errors_never_echo_an_interpolated_value(tmp_path: Path) -> None:
    path = tmp_path / "sw.yaml"
    path.write_text(CONFIG.format(port='"${SMTP_PORT}"'))
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={"SMTP_PORT": PASSWORD, "SMTP_PASSWORD": PASSWORD})
    message = str(caught.value)
    assert PASSWORD not in message
    assert "notify.channels[0].port" in message and "${SMTP_PORT}" in message


def test_config_validate_prints_no_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "sw.yaml"
    path.write_text(CONFIG.format(port='"${SMTP_PORT}"'))
    monkeypatch.setenv("SMTP_PORT", f"25{PASSWORD}")
    monkeypatch.setenv("SMTP_PASSWORD", PASSWORD)
    result = CliRunner().invoke(main, ["config", "validate", str(path)])
    assert result.exit_code == 2 and PASSWORD not in result.output
    path.write_text(CONFIG.format(port=587))
    result = CliRunner().invoke(main, ["config", "validate", str(path)])
    assert result.exit_code == 0 and PASSWORD not in result.output


def test_a_secret_in_a_validator_message_is_redacted(tmp_path: Path) -> None:
    """A validator that quotes the value (here the duration parser) still does not print the secret."""
    text = "store: {path: s.duckdb, lock_timeout: '${LOCK}'}\nsources: [{name: demo, type: simulated}]\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, tmp_path / "sw.yaml", environ={"LOCK": PASSWORD})
    assert PASSWORD not in str(caught.value) and "${LOCK}" in str(caught.value)


ENV_SCRIPT = (
    "import json, os, sys; text = json.dumps(dict(os.environ)); open(sys.argv[1], 'w').write(text); print(text)"
)


def test_a_hook_gets_a_minimal_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTP_PASSWORD", PASSWORD)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-" + PASSWORD)
    monkeypatch.setenv("PAGER_TOKEN", TOKEN)
    out = tmp_path / "env.json"
    hook: dict[str, Any] = {
        "command": [sys.executable, "-c", ENV_SCRIPT, str(out)],
        "env": {"PAGER_KEY": "given-on-purpose"},
        "pass_env": ["PAGER_TOKEN"],
    }
    spec = rule("page", do="hook", how="enforce", when={"job": {}}, hook=hook)
    clock = FixedClock(NOW)
    store = Store(tmp_path / "s.duckdb", clock=clock)
    run = run_killswitch(settings([spec]), store, clock, jobs=[job("bigquery", "bquxjob_1", provider="gcp")])
    assert run.executed, run.failed
    seen = json.loads(out.read_text())
    assert "SMTP_PASSWORD" not in seen and "AWS_SECRET_ACCESS_KEY" not in seen
    assert seen["PAGER_KEY"] == "given-on-purpose" and seen["PAGER_TOKEN"] == TOKEN
    assert seen["SPENDWATCH_HOOK_PHASE"] == "act" and "PATH" in seen
    assert set(seen) <= {"PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "PYTHONIOENCODING",
                         "SPENDWATCH_ACTION_ID", "SPENDWATCH_HOOK_PHASE", "PAGER_KEY", "PAGER_TOKEN",
                         "__CF_USER_TEXT_ENCODING"}  # fmt: skip
    # What the hook prints of its own secrets is scrubbed before it is journaled.
    journal = _everything(store)
    assert "SPENDWATCH_HOOK_PHASE" in journal  # the stdout is kept …
    assert "given-on-purpose" not in journal and TOKEN not in journal  # … without the secrets it was given
