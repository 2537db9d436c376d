"""``spendwatch digest`` and ``spendwatch run``."""

from __future__ import annotations

import sys
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import click

from spendwatch.cli_util import Env, echo_json, handle_errors, json_option, pass_env

if TYPE_CHECKING:
    from spendwatch.clock import Clock
    from spendwatch.store import Store

_CONFIG_HELP = "config file (same as the global --config)"


def _use_config(env: Env, config_path: str | None) -> None:
    if config_path is not None:
        env.config_path = config_path


@click.command("digest")
@click.option("--date", "day", type=click.DateTime(["%Y-%m-%d"]), help="the digest's date (default: today, local)")
@click.option("--to-dir", type=click.Path(file_okay=False), help="write .html/.eml/.txt here instead of sending")
@click.option("--force", is_flag=True, help="send even if that day's digest was already sent")
@click.option("--no-charts", is_flag=True, help="leave out the incident charts")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), help=_CONFIG_HELP)
@json_option()
@pass_env
@handle_errors
def digest_command(
    env: Env,
    day: datetime | None,
    to_dir: str | None,
    force: bool,
    no_charts: bool,
    config_path: str | None,
    as_json: bool,
) -> None:
    """Render the daily digest to files (--to-dir), or send it once through the configured channel.

    The digest dated D reports on the UTC billing day before D, and on everything since the last
    digest sent. Sending records the day in the store: running it twice sends once (see --force).
    """
    _use_config(env, config_path)
    config = env.config
    the_day = day.date() if day else datetime.now(ZoneInfo(config.daemon.timezone)).date()
    if to_dir is not None:
        written = render_to_dir(config, env.store, env.clock, the_day, Path(to_dir), charts=not no_charts)
        if as_json:
            echo_json({"day": the_day, "written": written})
            return
        for path in written:
            click.echo(f"wrote {path}")
        return
    from spendwatch.notify.send import send_digest

    outcome = send_digest(config, env.store, env.clock, the_day, force=force)
    if as_json:
        echo_json(outcome)
    else:
        click.echo(outcome.message)
        if outcome.recipients:
            click.echo(f"  to: {', '.join(outcome.recipients)}")
    if outcome.status in ("failed", "busy"):
        sys.exit(1)


def render_to_dir(config: Any, store: Store, clock: Clock, day: date, folder: Path, *, charts: bool) -> list[Path]:
    """Write each part of the digest (FinOps, then each team) as ``.html`` (images inlined, opens in a
    browser), ``.eml`` and ``.txt``; send nothing. The FinOps files come first."""
    from spendwatch.errors import InputError
    from spendwatch.notify.config import effective_notify
    from spendwatch.notify.ledger import DigestLedger
    from spendwatch.notify.links import links_for, signer_for
    from spendwatch.notify.render import digest_email, digest_filename, new_message_id
    from spendwatch.notify.send import digest_parts

    notify = effective_notify(config)
    ledger = DigestLedger(store, clock, notify.digest)
    last = ledger.last_sent(day)
    signer = signer_for(config, clock=clock)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--to-dir {folder}: cannot create the folder ({exc.strerror})") from None
    written: list[Path] = []
    for part in digest_parts(config, store, clock, day, since=last.day if last else None):
        # Files are for a person to open: with the action page on, they carry the first recipient's links.
        links = links_for(config, part.recipients[0], signer=signer) if signer is not None else None
        email, rendered = digest_email(
            part.digest,
            subject_template=notify.digest.subject,
            sender=notify.sender,
            recipients=part.recipients,
            message_id=new_message_id(),
            charts=charts,
            links=links,
        )
        stem = folder / digest_filename(day, part.digest.audience)
        outputs = [
            (stem.with_suffix(".html"), rendered.preview_html.encode()),
            (stem.with_suffix(".eml"), email.message.as_bytes()),
            (stem.with_suffix(".txt"), rendered.text.encode()),
        ]
        for path, data in outputs:
            path.write_bytes(data)
        written += [path for path, _ in outputs]
    return written


@click.command("run")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), help=_CONFIG_HELP)
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="how much to log on stderr",
)
@click.option("--log-json", is_flag=True, help="JSON lines on stderr (journald, kubectl logs)")
@pass_env
@handle_errors
def run_command(env: Env, config_path: str | None, log_level: str, log_json: bool) -> None:
    """Run the daemon: collect, detect, act, alert and send the daily digest on schedule.

    Stops cleanly on SIGTERM/SIGINT (exit 0 within 10 s). One daemon per store: a second one
    refuses to start. Serves /healthz, /readyz and /metrics (daemon.health).
    """
    import logging

    from spendwatch.daemon.scheduler import run_daemon
    from spendwatch.logs import JsonFormatter, configure_logging

    _use_config(env, config_path)
    # ``spendwatch --log-json run`` works too: keep JSON if the global option already chose it.
    already_json = any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)
    configure_logging(log_level, json_lines=log_json or already_json)
    sys.exit(run_daemon(env.config, clock=env.clock))
