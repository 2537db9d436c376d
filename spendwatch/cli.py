"""The ``spendwatch`` command line.

Exit codes: 0 ok, 1 internal failure, 2 user error (bad config, bad input, unknown id). Errors are one
line on stderr; a traceback is printed only for bugs (or with ``--debug``).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from spendwatch import __version__
from spendwatch.clock import SystemClock
from spendwatch.errors import SpendwatchError, UserError

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_CONFIG = "spendwatch.yaml"


class Env:
    """What every command gets: the config path, the clock, and lazily the config and the store."""

    def __init__(self, config_path: str | None, debug: bool) -> None:
        self.config_path = config_path
        self.debug = debug
        self.clock = SystemClock()
        self._config: Any = None
        self._store: Any = None

    @property
    def config(self) -> Any:
        if self._config is None:
            from spendwatch.config import load_config

            path = self.config_path or os.environ.get("SPENDWATCH_CONFIG") or DEFAULT_CONFIG
            if not Path(path).exists() and self.config_path is None:
                raise UserError(f"no config file: pass --config FILE (or set SPENDWATCH_CONFIG); {path} not found")
            self._config = load_config(path)
        return self._config

    @property
    def store(self) -> Any:
        if self._store is None:
            from spendwatch.store import Store

            store_config = self.config.store
            self._store = Store(
                store_config.path,
                lock_timeout=store_config.lock_timeout.total_seconds(),
                clock=self.clock,
                memory_limit=store_config.memory_limit,
            )
        return self._store


pass_env = click.make_pass_decorator(Env)


def handle_errors(func: F) -> F:
    """Turn spendwatch errors into one line and the documented exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SpendwatchError as exc:
            if _debugging():
                raise
            click.echo(f"spendwatch: error: {exc}", err=True)
            sys.exit(2 if isinstance(exc, UserError) else 1)

    return wrapper  # type: ignore[return-value]


def _debugging() -> bool:
    ctx = click.get_current_context(silent=True)
    env = ctx.find_object(Env) if ctx else None
    return env is not None and env.debug


def progress(message: str) -> None:
    click.echo(f"  {message}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="spendwatch")
@click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help=f"config file (default: $SPENDWATCH_CONFIG or ./{DEFAULT_CONFIG})",
)
@click.option("--log-level", default="WARNING", show_default=True, help="DEBUG, INFO, WARNING or ERROR")
@click.option("--log-json", is_flag=True, help="log JSON lines (for journald / kubectl logs)")
@click.option("--debug", is_flag=True, help="show tracebacks")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, log_level: str, log_json: bool, debug: bool) -> None:
    """spendwatch: watches cloud spend, names who and what caused a spike, and can switch it off."""
    from spendwatch.logs import configure_logging

    configure_logging(log_level, json_lines=log_json)
    ctx.obj = Env(config_path, debug)


# -- config ---------------------------------------------------------------------------------------


@main.group("config")
def config_group() -> None:
    """Check a config file, or print its JSON Schema."""


@config_group.command("validate")
@click.argument("file", type=click.Path(dir_okay=False))
@handle_errors
def config_validate(file: str) -> None:
    """Validate FILE; prints what it configures, or one line naming the bad key."""
    from spendwatch.config import load_config

    config = load_config(file)
    sources = ", ".join(f"{s.name} ({s.type})" for s in config.sources)
    click.echo(f"{file}: ok — store {config.store.path}; sources: {sources}; monitors: {len(config.monitors)}")


@config_group.command("schema")
def config_schema() -> None:
    """Print the JSON Schema of the config file."""
    from spendwatch.config import config_json_schema

    click.echo(json.dumps(config_json_schema(), indent=2))


# -- collect --------------------------------------------------------------------------------------


@main.command("collect")
@click.option("--source", "source_names", multiple=True, help="only this source (repeatable)")
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), help="backfill from this day (UTC)")
@pass_env
@handle_errors
def collect(env: Env, source_names: tuple[str, ...], since: datetime | None) -> None:
    """Collect cost and job data from the configured sources into the store."""
    from spendwatch.collect import collect_source

    sources = [env.config.source(n) for n in source_names] if source_names else env.config.sources
    failed = False
    for source in sources:
        if not source.enabled and not source_names:
            continue
        click.echo(f"collecting {source.name} ({source.type}) …", err=True)
        run = collect_source(
            source, env.store, env.clock, since=since.replace(tzinfo=UTC) if since else None, progress=progress
        )
        for problem in run.problems:
            click.echo(f"  problem: {problem}", err=True)
        if run.error:
            failed = True
            click.echo(f"{source.name}: failed: {run.error}", err=True)
        else:
            click.echo(
                f"{source.name}: {run.cost_rows} cost line(s) in {run.periods} period(s), "
                f"{run.jobs} job record(s), {run.seconds:.1f}s"
            )
    if failed:
        sys.exit(1)


# -- costs ----------------------------------------------------------------------------------------


@main.group("costs")
def costs_group() -> None:
    """Work with the cost lines in the store."""


@costs_group.command("export")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help=".parquet or .csv file")
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), help="charge periods from this day (UTC)")
@click.option("--until", type=click.DateTime(["%Y-%m-%d"]), help="charge periods before this day (UTC)")
@click.option("--provider", help="only this provider (aws, gcp …)")
@pass_env
@handle_errors
def costs_export(env: Env, output: str, since: datetime | None, until: datetime | None, provider: str | None) -> None:
    """Export cost lines as a FOCUS file (Parquet or CSV, FOCUS column names)."""
    from spendwatch.export import export_focus

    rows = export_focus(
        env.store,
        Path(output),
        since=since.replace(tzinfo=UTC) if since else None,
        until=until.replace(tzinfo=UTC) if until else None,
        provider=provider,
    )
    click.echo(f"wrote {rows} cost line(s) to {output}")


# -- commands contributed by subsystems ------------------------------------------------------------
# Each subsystem owns its click commands in ``<package>/cli.py`` and is added here with one line.
# Those modules import their heavy dependencies inside the commands, so ``spendwatch --help`` stays fast.


if __name__ == "__main__":  # pragma: no cover
    main()
