"""CLI commands of detection: ``detect``, ``anomalies list|show|ack|expected``, ``backtest``."""

from __future__ import annotations

import getpass
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from spendwatch.cli_util import (
    Env,
    FiniteFloat,
    check_output_file,
    echo_json,
    handle_errors,
    json_option,
    pass_env,
    progress,
)
from spendwatch.store.records import INCIDENT_STATUSES, Incident
from spendwatch.terminal import clean

_ACTIVE = ("open", "ongoing")


@click.command("detect")
@click.option("--monitor", "monitors", multiple=True, help="only this monitor (repeatable)")
@json_option()
@pass_env
@handle_errors
def detect_command(env: Env, monitors: tuple[str, ...], as_json: bool) -> None:
    """Score the stored series and update incidents (attribution included)."""
    from spendwatch.detect.runner import run_detection

    run = run_detection(env.config, env.store, env.clock, monitors=monitors or None, progress=progress)
    if as_json:
        per_monitor = [
            {"monitor": m.monitor, "granularity": m.granularity, "series": m.series, "steps": m.steps,
             "newest": m.newest, "anomalous_series": m.anomalous_series, **asdict(m.counts)}
            for m in run.monitors
        ]  # fmt: skip
        echo_json(
            {"series_scored": run.series_scored, "opened": run.opened, "seconds": round(run.seconds, 3),
             "monitors": per_monitor}
        )  # fmt: skip
        return
    click.echo(f"{run.series_scored} series scored in {run.seconds:.1f}s; {run.opened} new incident(s)")


@click.group("anomalies")
def anomalies_group() -> None:
    """List, inspect and give feedback on incidents."""


@anomalies_group.command("list")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(INCIDENT_STATUSES),
    help="only these statuses (default: open, ongoing)",
)
@click.option("--all", "show_all", is_flag=True, help="every status, drops and withdrawn ones included")
@click.option("--monitor", help="only this monitor")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100000))
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table")
@pass_env
@handle_errors
def anomalies_list(
    env: Env, statuses: tuple[str, ...], show_all: bool, monitor: str | None, limit: int, as_json: bool
) -> None:
    """List incidents, newest first."""
    from spendwatch.detect.incidents import load_incidents

    chosen = None if show_all else (statuses or _ACTIVE)
    incidents = load_incidents(env.store, statuses=chosen, monitor=monitor, limit=limit)
    if as_json:
        for incident in incidents:
            click.echo(json.dumps(_summary(incident), default=str))
        return
    if not incidents:
        click.echo("no incidents" + ("" if show_all else " open or ongoing (use --all to see every one)"))
        return
    click.echo(f"{'ID':>5}  {'STATUS':<12} {'SEV':<8} {'KIND':<6} {'LAST SEEN':<16} {'IMPACT':>12}  SERIES / CULPRIT")
    for i in incidents:
        when = i.last_seen.strftime("%Y-%m-%d %H:%M")
        click.echo(
            f"{i.id:>5}  {i.status:<12} {i.severity:<8} {i.kind:<6} {when:<16} "
            f"{i.impact:>12,.2f}  [{i.monitor}/{i.granularity}] {clean(i.title)}"
        )
        click.echo(f"{'':>5}  {'':<12} {'':<8} {'':<6} {'':<16} {'':>12}  {clean(i.culprit_sentence())}")


def _summary(incident: Incident) -> dict[str, Any]:
    data = asdict(incident)
    data.pop("points")
    data["culprit"] = incident.culprit_sentence()
    return data


@anomalies_group.command("show")
@click.argument("incident_id", type=int)
@click.option("--json", "as_json", is_flag=True)
@pass_env
@handle_errors
def anomalies_show(env: Env, incident_id: int, as_json: bool) -> None:
    """Everything about one incident: figures, contributors, jobs."""
    from spendwatch.detect.incidents import get_incident

    incident = get_incident(env.store, incident_id)
    if as_json:
        click.echo(json.dumps(asdict(incident), default=str, indent=2))
        return
    c = clean(incident.billing_currency)
    click.echo(f"incident #{incident.id}: {clean(incident.title)}  [{incident.monitor}/{incident.granularity}]")
    click.echo(f"  status {incident.status}, severity {incident.severity}, kind {incident.kind}")
    click.echo(f"  seen {incident.first_seen:%Y-%m-%d %H:%M} → {incident.last_seen:%Y-%m-%d %H:%M} UTC")
    click.echo(
        f"  actual {incident.actual_total:,.2f} {c} vs expected {incident.expected_total:,.2f} {c}: "
        f"+{incident.impact:,.2f} {c} ({incident.impact_pct:+.0%})"
    )
    click.echo(
        f"  peak {incident.peak_actual:,.2f} {c} at {incident.peak_at:%Y-%m-%d %H:%M} "
        f"(expected {incident.peak_expected:,.2f}, robust z {incident.peak_score:.1f})"
    )
    click.echo(f"  culprit: {clean(incident.culprit_sentence())}")
    if incident.contributors:
        click.echo("  contributors:")
        for item in incident.contributors:
            value = clean(item.value)
            click.echo(f"    {item.dimension:<16} {value:<48} +{item.delta:>12,.2f} {c}  {item.share:>6.1%}")
    if incident.jobs:
        click.echo("  jobs:")
        for job in incident.jobs:
            who = clean(job.user or "?")
            click.echo(
                f"    {clean(job.platform):<10} {clean(job.job_id):<40} {who:<28} {job.cost:>12,.2f} {c}  "
                f"{clean(job.state)}" + (f"\n      {clean(job.query_text[:160])}" if job.query_text else "")
            )
    if incident.feedback:
        click.echo(
            f"  feedback: {incident.feedback} by {clean(incident.feedback_by)} at {incident.feedback_at:%Y-%m-%d %H:%M}"
        )


def _actor(given: str | None) -> str:
    if given:
        return given
    try:
        return os.environ.get("SPENDWATCH_ACTOR") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@anomalies_group.command("ack")
@click.argument("incident_id", type=int)
@click.option("--note", help="why (kept with the incident)")
@click.option("--as", "actor", help="who is acknowledging (default: $SPENDWATCH_ACTOR or the login name)")
@json_option()
@pass_env
@handle_errors
def anomalies_ack(env: Env, incident_id: int, note: str | None, actor: str | None, as_json: bool) -> None:
    """Acknowledge an incident: it stops alerting."""
    from spendwatch.detect.incidents import give_feedback

    incident = give_feedback(env.store, incident_id, "acknowledged", actor=_actor(actor), note=note)
    if as_json:
        echo_json(_summary(incident))
        return
    click.echo(f"incident #{incident.id} acknowledged: it will not alert again")


@anomalies_group.command("expected")
@click.argument("incident_id", type=int)
@click.option("--note", help="why (kept with the incident)")
@click.option("--as", "actor", help="who decided (default: $SPENDWATCH_ACTOR or the login name)")
@json_option()
@pass_env
@handle_errors
def anomalies_expected(env: Env, incident_id: int, note: str | None, actor: str | None, as_json: bool) -> None:
    """Mark an incident as expected: it stops alerting and its level becomes the series' new baseline."""
    from spendwatch.detect.incidents import give_feedback

    incident = give_feedback(env.store, incident_id, "expected", actor=_actor(actor), note=note)
    if as_json:
        echo_json(_summary(incident))
        return
    click.echo(
        f"incident #{incident.id} marked expected: the series is re-baselined from "
        f"{incident.first_seen:%Y-%m-%d %H:%M} on the next detection"
    )


@click.command("backtest")
@click.argument("input_path", metavar="INPUT.csv", type=click.Path(dir_okay=False, exists=False))
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="flags CSV to write")
@click.option("--granularity", type=click.Choice(["daily", "hourly"]), help="default: from the timestamps")
@click.option(
    "--sensitivity",
    type=FiniteFloat(above=0),
    default=1.0,
    show_default=True,
    help="divides every z threshold (> 0): 2 flags on half the surprise",
)
@json_option()
@handle_errors
def backtest_command(input_path: str, output: str, granularity: str | None, sensitivity: float, as_json: bool) -> None:
    """Walk forward causally through series_id,timestamp,cost rows and write series_id,timestamp,score,is_anomaly."""
    from spendwatch.detect.backtest import read_long_csv, run_backtest, write_flags
    from spendwatch.detect.model import ModelParams

    out = Path(output)
    check_output_file(out, "--output")  # before minutes of computation, not after
    panel = read_long_csv(Path(input_path), granularity)
    click.echo(
        f"{len(panel.series_ids)} series × {len(panel.timestamps)} {panel.granularity} steps from {input_path}",
        err=True,
    )
    params = ModelParams.for_granularity(panel.granularity, sensitivity=sensitivity)  # type: ignore[arg-type]
    flags = run_backtest(panel, params)
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    try:  # written beside the destination and renamed: a failed write leaves no half file
        write_flags(flags, partial, panel.granularity)
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    flagged = int(flags["is_anomaly"].sum())
    if as_json:
        echo_json(
            {"input": input_path, "output": output, "granularity": panel.granularity, "series": len(panel.series_ids),
             "steps": len(panel.timestamps), "decisions": len(flags), "anomalous": flagged, "sensitivity": sensitivity}
        )  # fmt: skip
    else:
        click.echo(f"wrote {len(flags)} decisions ({flagged} anomalous) to {output}")
    sys.stdout.flush()
