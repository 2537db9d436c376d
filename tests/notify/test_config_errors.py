"""Every notify:/daemon: validator fed bad input: one line naming file, line and key; exit 2 from the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from spendwatch.cli import main
from spendwatch.config import load_config
from spendwatch.errors import ConfigError
from tests.notify.estate import write_config

SMTP = {"name": "mail", "type": "smtp", "host": "smtp.example.com"}


@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        (
            {"notify": {"channels": [{"name": "x", "type": "pigeon"}]}},
            "notify.channels[0].type: unknown channel type 'pigeon'",
        ),
        (
            {"notify": {"channels": [{"name": "x"}]}},
            "notify.channels[0].type: 'type' is required (one of: folder, msteams, pagerduty, ses, smtp, webhook)",
        ),
        ({"notify": {"channels": [{**SMTP, "prot": 25}]}}, "notify.channels[0].prot: unknown key"),
        ({"notify": {"channels": [SMTP]}}, "digest.recipients: smtp channel 'mail' needs them"),
        (
            {"notify": {"digest": {"recipients": ["not-an-address"]}}},
            "notify.digest.recipients[0]: 'not-an-address' is not an email address",
        ),
        (
            {"notify": {"channels": [SMTP, SMTP], "digest": {"recipients": ["a@b.c"]}}},
            "every channel needs a distinct name",
        ),
        ({"notify": {"digest": {"channel": "nope"}}}, "digest.channel: no channel named 'nope'"),
        (
            {
                "notify": {
                    "channels": [{"name": "hook", "type": "webhook", "url": "https://h.example/x"}],
                    "digest": {"channel": "hook"},
                }
            },
            "it cannot carry email",
        ),
        (
            {"notify": {"channels": [{"name": "hook", "type": "webhook", "url": "ftp://h"}]}},
            "url must start with https://",
        ),
        ({"notify": {"alerts": {"channels": ["ghost"]}}}, "alerts.channels: no channel named 'ghost'"),
        ({"notify": {"alerts": {"min_severity": "apocalyptic"}}}, "notify.alerts.min_severity"),
        (
            {"notify": {"team_tag": None, "routes": [{"name": "ml", "recipients": ["a@b.c"]}]}},
            "routes[0]: route 'ml' matches nothing",
        ),
        ({"notify": {"routes": [{"name": "ml", "owners": ["x"]}]}}, "a route needs recipients or channels"),
        (
            {"notify": {"channels": [{**SMTP, "username": "u"}], "digest": {"recipients": ["a@b.c"]}}},
            "username and password go together",
        ),
        (
            {
                "notify": {
                    "channels": [{**SMTP, "security": "none", "username": "u", "password": "p"}],
                    "digest": {"recipients": ["a@b.c"]},
                }
            },
            "refusing to send a password without TLS",
        ),
        ({"notify": {"digest": {"subject": "digest {when}"}}}, "only {date} and {headline} can be filled in"),
        ({"daemon": {"timezone": "Mars/Olympus"}}, "daemon.timezone: 'Mars/Olympus' is not an IANA time zone"),
        ({"daemon": {"digest_at": "8 o'clock"}}, 'daemon.digest_at: "8 o\'clock" is not a time of day'),
        ({"daemon": {"digest_days": "weekdays"}}, "daemon.digest_days: 'weekdays' is not a day-of-week list"),
        ({"daemon": {"shutdown_grace": "30s"}}, "daemon.shutdown_grace: must be at most 9s"),
        ({"daemon": {"alerts_every": "0s"}}, "daemon.alerts_every: must be at least 1s"),
        ({"daemon": {"health": {"port": 70000}}}, "daemon.health.port"),
        ({"daemon": {"max_workers": 0}}, "daemon.max_workers"),
    ],
)
def test_bad_sections_fail_with_one_line_naming_the_key(
    tmp_path: Path, sections: dict[str, Any], expected: str
) -> None:
    path = write_config(tmp_path, **sections)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert expected in message
    assert message.startswith(f"{path}:") and "\n" not in message


def test_a_missing_smtp_password_variable_is_named(tmp_path: Path) -> None:
    channel = {**SMTP, "username": "bot", "password": "${SMTP_PASSWORD_FOR_TEST}"}
    path = write_config(tmp_path, notify={"channels": [channel], "digest": {"recipients": ["a@b.c"]}})
    result = CliRunner().invoke(main, ["digest", "--config", str(path), "--date", "2026-11-20"])
    assert result.exit_code == 2
    assert "environment variable SMTP_PASSWORD_FOR_TEST is not set" in result.output
    assert "Traceback" not in result.output


def test_the_to_dir_must_be_creatable(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = CliRunner().invoke(main, ["digest", "--config", str(path), "--to-dir", str(blocker / "sub")])
    assert result.exit_code == 2
    assert "--to-dir" in result.output
