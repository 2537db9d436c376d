"""The ``spendwatch`` command line.

Exit codes: 0 ok, 1 internal failure, 2 user error (bad config, bad input, unknown id). Errors are one
line on stderr; a traceback is printed only for bugs (or with ``--debug``).
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from spendwatch import __version__
from spendwatch.cli_util import (
    DEFAULT_CONFIG,
    Env,
    OneLineErrors,
    accept_config_anywhere,
    echo_json,
    handle_errors,
    json_option,
    pass_env,
    progress,
)


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="spendwatch")
@click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help=f"config file (default: $SPENDWATCH_CONFIG or ./{DEFAULT_CONFIG})",
)
@click.option(
    "--log-level",
    default="WARNING",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="how much to log on stderr",
)
@click.option("--log-json", is_flag=True, help="log JSON lines (for journald / kubectl logs)")
@click.option("--debug", is_flag=True, help="show tracebacks")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, log_level: str, log_json: bool, debug: bool) -> None:
    """spendwatch: watches cloud spend, names who and what caused a spike, and can switch it off."""
    from spendwatch import terminal
    from spendwatch.logs import configure_logging

    # Data strings (tags, job names, queries) reach this terminal: no escape sequence gets through.
    ctx.call_on_close(terminal.install())
    configure_logging(log_level, json_lines=log_json)
    ctx.obj = Env(config_path, debug)


__all__ = ["Env", "handle_errors", "main", "pass_env", "progress"]


# -- config ---------------------------------------------------------------------------------------


@main.group("config")
def config_group() -> None:
    """Check a config file, or print its JSON Schema."""


@config_group.command("validate")
@click.argument("file", type=click.Path(dir_okay=False))
@json_option()
@handle_errors
def config_validate(file: str, as_json: bool) -> None:
    """Validate FILE; prints what it configures, or one line naming the bad key."""
    from spendwatch.config import load_config

    config = load_config(file)
    if as_json:
        echo_json(
            {
                "file": file,
                "valid": True,
                "store": config.store.path,
                "sources": [{"name": s.name, "type": s.type, "enabled": s.enabled} for s in config.sources],
                "monitors": [m.name for m in config.monitors],
                "budgets": [
                    {"name": b.name, "amount": b.amount, "currency": b.currency, "scope": b.scope}
                    for b in config.budgets
                ],
                "channels": [{"name": c.name, "type": c.type} for c in config.notify.channels],
                "routes": [r.name for r in config.notify.routes],
                "killswitch_rules": [{"name": r.name, "do": r.do, "how": r.how} for r in config.killswitch.rules],
            }
        )
        return
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
@json_option()
@pass_env
@handle_errors
def collect(env: Env, source_names: tuple[str, ...], since: datetime | None, as_json: bool) -> None:
    """Collect cost and job data from the configured sources into the store.

    Exits 2 when a file, manifest or setting is the user's to fix, 1 when a cloud API kept failing;
    a part that could not be read (one period or file) keeps its previous data either way.
    """
    from spendwatch.collect import collect_source

    sources = [env.config.source(n) for n in source_names] if source_names else env.config.sources
    exit_code = 0
    records = []
    for source in sources:
        if not source.enabled and not source_names:
            continue
        click.echo(f"collecting {source.name} ({source.type}) …", err=True)
        run = collect_source(
            source, env.store, env.clock, since=since.replace(tzinfo=UTC) if since else None, progress=progress
        )
        for problem in run.problems:
            # A part that could not be read (one period, one file) kept its previous data; the rest loaded.
            click.echo(f"spendwatch: problem: {source.name}: {problem}", err=True)
        if run.problems:
            exit_code = max(exit_code, 2 if run.user_problems else 1)
        records.append(
            {"source": source.name, "type": source.type, "ok": run.error is None, "cost_lines": run.cost_rows,
             "replaced_lines": run.replaced_rows, "periods": run.periods, "jobs": run.jobs,
             "seconds": round(run.seconds, 3), "problems": run.problems, "error": run.error,
             "interrupted": run.interrupted, "counters": run.counters}
        )  # fmt: skip
        if run.error:
            exit_code = max(exit_code, 2 if run.user_error else 1)
            click.echo(f"spendwatch: error: {source.name}: {run.error}", err=True)
        elif not as_json:
            click.echo(
                f"{source.name}: {run.cost_rows} cost line(s) in {run.periods} period(s), "
                f"{run.jobs} job record(s), {run.seconds:.1f}s"
            )
    if as_json:
        echo_json(records)
    if exit_code:
        sys.exit(exit_code)


# -- demo -----------------------------------------------------------------------------------------


@main.command("demo")
@click.option(
    "--output",
    "-o",
    default="spendwatch-demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="folder for the store and the digest files",
)
@click.option("--seed", default=7, show_default=True, help="the simulated estate's random seed")
@click.option("--days", default=120, show_default=True, type=click.IntRange(30, 1100), help="days of history")
@pass_env
@handle_errors
def demo(env: Env, output: str, seed: int, days: int) -> None:
    """Run the whole pipeline on a simulated AWS + GCP estate: no cloud account, no network."""
    from spendwatch.demo import run_demo, summary_lines

    result = run_demo(Path(output), env.clock, seed=seed, days=days, say=lambda line: click.echo(line, err=True))
    findings = result.findings
    click.echo("")
    click.echo("Look around the demo's store:")
    for line in result.commands():
        click.echo(f"  {line}")
    click.echo("")
    click.echo("What spendwatch found in the simulated estate:")
    for line in summary_lines(findings):
        click.echo(f"  {line}")
    click.echo("")
    for line in result.guard.lines():
        click.echo(f"  {line}")
    if not all(f.correct for f in findings) or not result.guard.caught_within_a_minute:
        click.echo("some injected incidents were not found as expected", err=True)
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
@json_option()
@pass_env
@handle_errors
def costs_export(
    env: Env, output: str, since: datetime | None, until: datetime | None, provider: str | None, as_json: bool
) -> None:
    """Export cost lines as a FOCUS 1.0 dataset (Parquet or CSV) with its FOCUS metadata beside it.

    Every FOCUS 1.0 column is written (NULL where the source lacks it), then spendwatch's x_ columns;
    FILE.metadata.json states the FOCUS version and each column's type.
    """
    from spendwatch.errors import InputError
    from spendwatch.export import export_focus

    if since is not None and until is not None and since >= until:
        raise InputError(f"--since {since:%Y-%m-%d} is not before --until {until:%Y-%m-%d}: no period to export")
    result = export_focus(
        env.store,
        Path(output),
        since=since.replace(tzinfo=UTC) if since else None,
        until=until.replace(tzinfo=UTC) if until else None,
        provider=provider,
    )
    if as_json:
        echo_json(result)
        return
    click.echo(
        f"wrote {result.rows} cost line(s) to {output} (FOCUS {result.focus_version}; metadata: {result.metadata_path})"
    )
    if result.missing_mandatory:
        # Not an error: the source never had these (a Cost Explorer source has no billing period …).
        gaps = ", ".join(f"{name} ({count})" for name, count in result.missing_mandatory.items())
        click.echo(f"spendwatch: note: FOCUS mandatory columns left NULL where the source lacks them: {gaps}", err=True)


# -- commands contributed by subsystems ------------------------------------------------------------
# Each subsystem owns its click commands in ``<package>/cli.py`` and is added here with one line.
# Those modules import their heavy dependencies inside the commands, so ``spendwatch --help`` stays fast.
from spendwatch.detect.cli import anomalies_group, backtest_command, detect_command  # noqa: E402
from spendwatch.killswitch.cli import actions_group  # noqa: E402

main.add_command(detect_command)
main.add_command(anomalies_group)
main.add_command(backtest_command)
main.add_command(actions_group)
from spendwatch.notify.cli import digest_command, run_command  # noqa: E402

main.add_command(digest_command)
main.add_command(run_command)
from spendwatch.doctor.cli import doctor_command  # noqa: E402

main.add_command(doctor_command)
from spendwatch.guard.cli import guard_group  # noqa: E402

main.add_command(guard_group)
from spendwatch.store.cli import store_group  # noqa: E402

main.add_command(store_group)
from spendwatch.plugins_cli import plugins_group  # noqa: E402

main.add_command(plugins_group)
from spendwatch.notify.budgets_cli import budgets_group  # noqa: E402

main.add_command(budgets_group)
# Last: every subcommand takes -c/--config after its name too.
accept_config_anywhere(main)


if __name__ == "__main__":  # pragma: no cover
    main()
