"""``spendwatch doctor``: check credentials, sources and kill-switch permissions; print what to fix."""

from __future__ import annotations

import json
import os
import sys

import click

from spendwatch.cli_util import DEFAULT_CONFIG, Env, handle_errors, pass_env


@click.command("doctor")
@click.option(
    "-c", "--config", "config_path", type=click.Path(dir_okay=False), help="config file (as the global --config)"
)
@click.option("--gcp-project", "gcp_projects", multiple=True, help="also test kill-switch permissions on this project")
@click.option(
    "--gcp-billing-account",
    "gcp_billing_accounts",
    multiple=True,
    help="also test billing.* permissions on this account",
)
@click.option("--json", "as_json", is_flag=True, help="print the findings as JSON")
@pass_env
@handle_errors
def doctor_command(
    env: Env,
    config_path: str | None,
    gcp_projects: tuple[str, ...],
    gcp_billing_accounts: tuple[str, ...],
    as_json: bool,
) -> None:
    """Check that this deployment can do its job, and print what to fix.

    Checks the store folder, the cloud identity of every connection in use (AWS
    sts:GetCallerIdentity, GCP credentials), one cheap read per source, and every permission the
    configured kill-switch rules need (AWS IAM policy simulation, GCP testIamPermissions).
    Exit 0 when everything is in place, 1 when something is missing, 2 for a bad config.
    """
    from spendwatch.doctor.core import format_report, run_doctor

    if config_path is not None:
        env.config_path = config_path
    config = env.config  # a bad config is exit 2, before any check
    report = run_doctor(config, env.clock, gcp_projects=gcp_projects, gcp_billing_accounts=gcp_billing_accounts)
    if as_json:
        body = {"ok": report.ok, "summary": report.summary(), "findings": [f.as_dict() for f in report.findings]}
        click.echo(json.dumps(body, indent=2))
    else:
        for line in format_report(report, env.config_path or os.environ.get("SPENDWATCH_CONFIG") or DEFAULT_CONFIG):
            click.echo(line)
    sys.exit(0 if report.ok else 1)
