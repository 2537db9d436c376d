"""``spendwatch guard``: run one pass, show burn rates now, audit native limits."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from spendwatch.cli_util import Env, handle_errors, pass_env


@click.group("guard")
def guard_group() -> None:
    """The runaway-job guard: running jobs, their cost now, and the caps they must stay under."""


@guard_group.command("run-once")
@click.option("--json", "as_json", is_flag=True, help="print the pass as JSON")
@pass_env
@handle_errors
def run_once(env: Env, as_json: bool) -> None:
    """Poll every watched platform once, record breaches, and let the kill switch act on them."""
    from spendwatch.guard.engine import run_guard

    run = run_guard(env.config, env.store, env.clock)
    if as_json:
        click.echo(json.dumps(_run_json(run), indent=2, default=str))
    else:
        click.echo(run.summary())
        for breach in run.breaches:
            click.echo(f"  {breach.severity:8} {breach.monitor} {breach.limit}: {breach.summary}")
        for record in _actions(run):
            click.echo(f"  action #{record.id} {record.mode} {record.summary}: {record.state}")
    for problem in run.problems:
        click.echo(f"spendwatch: problem: {problem}", err=True)
    if run.problems:
        sys.exit(1)


def _actions(run: Any) -> list[Any]:
    ks = run.killswitch
    if ks is None:
        return []
    return [*ks.executed, *ks.dry_run, *ks.awaiting_approval, *ks.failed]


def _run_json(run: Any) -> dict[str, Any]:
    return {
        "at": run.started_at.isoformat(),
        "summary": run.summary(),
        "jobs": [_estimate_json(e) for e in run.estimates],
        "breaches": [
            {
                "guard": b.guard,
                "limit": b.limit,
                "severity": b.severity,
                "actual": b.actual,
                "cap": b.cap,
                "summary": b.summary,
            }
            for b in run.breaches
        ],
        "incidents": {
            "opened": run.incidents.opened,
            "updated": run.incidents.updated,
            "resolved": run.incidents.resolved,
        },
        "actions": [{"id": a.id, "mode": a.mode, "state": a.state, "target": a.summary} for a in _actions(run)],
        "api_calls": run.poll.api_calls if run.poll else {},
        "problems": run.problems,
    }


def _estimate_json(item: Any) -> dict[str, Any]:
    return {
        "platform": item.platform,
        "job_id": item.record["job_id"],
        "user": item.user,
        "account": item.account,
        "state": item.record.get("state"),
        "runtime_seconds": item.runtime.total_seconds() if item.runtime else None,
        "cost": item.cost,
        "projected": item.projected,
        "burn_rate_per_hour": item.burn_rate,
        "currency": item.currency,
        "cost_method": item.method,
        "burn_method": item.burn_method,
    }


@guard_group.command("status")
@click.option("--live", is_flag=True, help="poll the clouds now instead of reading the daemon's last poll")
@click.option("--top", default=20, show_default=True, type=click.IntRange(1, 1000), help="jobs listed")
@click.option("--json", "as_json", is_flag=True)
@pass_env
@handle_errors
def status(env: Env, live: bool, top: int, as_json: bool) -> None:
    """Burn rates now: the running jobs, users and projects spending fastest, against their caps."""
    from spendwatch.guard.status import guard_status

    view = guard_status(env.config, env.store, env.clock, live=live)
    if as_json:
        click.echo(json.dumps(view.as_json(top), indent=2, default=str))
        return
    for line in view.lines(top):
        click.echo(line)
    for problem in view.problems:
        click.echo(f"spendwatch: problem: {problem}", err=True)


@guard_group.command("audit")
@click.option(
    "--fix-athena-cutoff", "cutoff", metavar="BYTES", help="set this per-query cutoff on workgroups without one"
)
@click.option("--apply", is_flag=True, help="really set it (default: say what would change)")
@click.option(
    "--bigquery-daily-tib",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0.001),
    help="daily quota the fix proposes",
)
@click.option(
    "--sagemaker-max-runtime",
    default="3d",
    show_default=True,
    help="flag SageMaker (and Kubernetes activeDeadlineSeconds) limits longer than this",
)
@click.option("--sagemaker-lookback", default="7d", show_default=True, help="SageMaker jobs created this far back")
@click.option("--fail-on-findings", is_flag=True, help="exit 1 when anything lacks a native limit (for CI)")
@click.option("--json", "as_json", is_flag=True)
@pass_env
@handle_errors
def audit_command(
    env: Env,
    cutoff: str | None,
    apply: bool,
    bigquery_daily_tib: float,
    sagemaker_max_runtime: str,
    sagemaker_lookback: str,
    fail_on_findings: bool,
    as_json: bool,
) -> None:
    """List what runs without a native limit (Athena cutoff, BigQuery quota, SageMaker max runtime) and the fix."""
    from spendwatch.config_types import parse_duration
    from spendwatch.errors import InputError
    from spendwatch.guard.audit import TIB, AuditOptions, audit, parse_bytes

    if apply and cutoff is None:
        raise InputError("--apply needs --fix-athena-cutoff BYTES (it is the only change the audit makes)")
    try:
        max_runtime, lookback = parse_duration(sagemaker_max_runtime), parse_duration(sagemaker_lookback)
    except ValueError as exc:
        raise InputError(f"--sagemaker-max-runtime/--sagemaker-lookback: {exc}") from None
    options = AuditOptions(
        fix_athena_cutoff=parse_bytes(cutoff) if cutoff is not None else None,
        apply=apply,
        bigquery_daily=int(bigquery_daily_tib * TIB),
        sagemaker_lookback=lookback,
        max_runtime=max_runtime,
    )
    report = audit(env.config, now=env.clock.now(), options=options, store=env.store)
    if as_json:
        click.echo(json.dumps(_audit_json(report), indent=2))
    else:
        _print_audit(report)
    for problem in report.problems:
        click.echo(f"spendwatch: problem: {problem}", err=True)
    if report.problems or (fail_on_findings and report.findings):
        sys.exit(1)


def _audit_json(report: Any) -> dict[str, Any]:
    return {
        "checked": report.checked,
        "findings": [f.__dict__ for f in report.findings],
        "planned": report.planned,
        "applied": report.applied,
        "problems": report.problems,
    }


def _print_audit(report: Any) -> None:
    checked = ", ".join(f"{n} {p}" for p, n in sorted(report.checked.items())) or "nothing"
    click.echo(f"checked {checked}; {len(report.findings)} without a native limit")
    for finding in report.findings:
        click.echo(f"\n{finding.platform} {finding.resource} ({finding.where}): {finding.problem}")
        click.echo(f"  fix: {finding.fix}")
    for line in report.planned + report.applied:
        click.echo(f"\n{line}")
