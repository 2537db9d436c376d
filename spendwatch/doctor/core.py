"""``spendwatch doctor``: is this deployment able to do its job? What exactly is missing?

Checks, in order, each a list of ``Finding`` (ok / warn / fail / skip, with what to fix):

1. the store: its folder exists and is writable by this user; an existing store answers;
2. credentials: one identity check per distinct cloud connection in use (AWS
   ``sts:GetCallerIdentity``, after assuming ``role_arn`` if set; GCP: the credential chain yields
   credentials, and whose they are);
3. each enabled source: one cheap read that proves it can reach its data (a Cost Explorer day, a
   ``ListObjectsV2`` of the export prefix, the Athena workgroup and Glue table, the BigQuery export
   table, the billing accounts list, ``testIamPermissions`` for what a source reads);
4. the kill switch: every permission the configured rules' actions declare (``Action.permissions``,
   ``undo_permissions``), checked against the caller's effective policy (AWS
   ``iam:SimulatePrincipalPolicy``; GCP ``testIamPermissions`` on the projects and billing accounts
   the rules may act on; Kubernetes ``SelfSubjectAccessReview`` in each cluster, ``spendwatch.doctor.k8s``).

A missing permission of a rule that may act (``approve``/``enforce``) fails; one of a ``dry-run``
rule, or one only ``undo`` needs, warns — the daemon runs, but that rule could not act yet.
``run_doctor`` returns a ``DoctorReport``; ``DoctorReport.ok`` is False when anything failed.
Every cloud boundary is injectable through ``clients`` (``aws_session``, ``gcp_credentials``,
``gcp_http``) the same way the collectors and the kill switch take theirs.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import spendwatch.doctor.aws as doctor_aws
import spendwatch.doctor.gcp as doctor_gcp
import spendwatch.doctor.k8s as doctor_k8s
from spendwatch.doctor.base import (
    STATUS_ORDER,
    DoctorContext,
    DoctorReport,
    Finding,
    SourceProbe,
    killswitch_needs,
    one_line,
)

if TYPE_CHECKING:
    from spendwatch.clock import Clock
    from spendwatch.collectors.base import SourceConfig
    from spendwatch.config import Config


def run_doctor(
    config: Config,
    clock: Clock,
    *,
    clients: dict[str, Any] | None = None,
    gcp_projects: Iterable[str] = (),
    gcp_billing_accounts: Iterable[str] = (),
) -> DoctorReport:
    """Run every check for ``config``; never raises for what it finds (a finding says it)."""
    ctx = DoctorContext(
        config,
        clock,
        dict(clients or {}),
        gcp_projects=tuple(gcp_projects),
        gcp_billing_accounts=tuple(gcp_billing_accounts),
    )
    report = DoctorReport()
    report.findings += check_store(ctx)
    report.findings += doctor_aws.check_credentials(ctx)
    report.findings += doctor_gcp.check_credentials(ctx)
    probes: dict[str, SourceProbe] = {
        "focus": probe_focus,
        "simulated": probe_simulated,
        **doctor_aws.SOURCE_PROBES,
        **doctor_gcp.SOURCE_PROBES,
        **doctor_k8s.SOURCE_PROBES,
    }
    for source in config.sources:
        report.findings += check_source(source, ctx, probes)
    needs = killswitch_needs(config)
    report.findings += doctor_aws.check_killswitch(ctx, [n for n in needs if n.provider == "aws"])
    report.findings += doctor_gcp.check_killswitch(ctx, [n for n in needs if n.provider == "gcp"])
    report.findings += doctor_k8s.check_killswitch(ctx, [n for n in needs if n.provider == "kubernetes"])
    return report


# -- the store ------------------------------------------------------------------------------------


def check_store(ctx: DoctorContext) -> list[Finding]:
    path = ctx.config.store.path
    folder = path.parent
    subject = str(path)
    if not folder.is_dir():
        return [
            Finding(
                "store", subject, "fail", f"the folder {folder} does not exist",
                fix=f"create it (systemd: StateDirectory=; Kubernetes: mount the PVC there): mkdir -p {folder}",
            )
        ]  # fmt: skip
    if not os.access(folder, os.W_OK | os.X_OK):
        return [
            Finding(
                "store", subject, "fail", f"{folder} is not writable by uid {os.getuid()}",
                fix=f"make {folder} writable by the daemon's user (systemd: StateDirectory=; k8s: fsGroup)",
            )
        ]  # fmt: skip
    if not path.exists():
        return [Finding("store", subject, "ok", "no store yet; the first collection creates it")]
    try:
        store = _open_store(ctx)
        rows = store.query("SELECT count(*) FROM runs")
        _remember_gcp_scopes(ctx, store)
    except Exception as exc:
        return [Finding("store", subject, "fail", f"cannot read the store: {one_line(exc)}")]
    return [Finding("store", subject, "ok", f"readable ({int(rows[0][0])} run(s) recorded)")]


def _open_store(ctx: DoctorContext) -> Any:
    from spendwatch.store import Store

    config = ctx.config.store
    return Store(config.path, lock_timeout=min(config.lock_timeout.total_seconds(), 10.0), clock=ctx.clock)


def _remember_gcp_scopes(ctx: DoctorContext, store: Any) -> None:
    """Projects and billing accounts a gcp-billing-accounts source saw: where kill-switch rules may act."""
    try:
        rows = store.query("SELECT DISTINCT project_id, billing_account_id FROM gcp_projects")
    except Exception:
        return  # an older store without the table: nothing known
    ctx.store_projects = tuple(sorted({str(r[0]) for r in rows if r[0]}))
    ctx.store_billing_accounts = tuple(sorted({str(r[1]) for r in rows if r[1]}))


# -- sources ---------------------------------------------------------------------------------------


def check_source(source: SourceConfig, ctx: DoctorContext, probes: dict[str, SourceProbe]) -> list[Finding]:
    subject = f"{source.name} ({source.type})"
    if not source.enabled:
        return [Finding("source", subject, "skip", "disabled")]
    probe = probes.get(source.type)
    if probe is None:
        return [
            Finding(
                "source", subject, "skip", f"doctor has no probe for {source.type!r} sources",
                fix=f"try it for real: spendwatch collect --source {source.name}",
            )
        ]  # fmt: skip
    try:
        return list(probe(source, ctx))
    except Exception as exc:  # a probe bug must not hide the other checks
        return [Finding("source", subject, "fail", f"the check itself failed: {one_line(exc)}")]


def probe_focus(source: Any, ctx: DoctorContext) -> Iterator[Finding]:
    from spendwatch.collectors.focus import find_files

    subject = f"{source.name} ({source.type})"
    files = find_files(str(source.path))
    if files:
        yield Finding("source", subject, "ok", f"{len(files)} FOCUS file(s) under {source.path}")
    else:
        yield Finding(
            "source", subject, "warn", f"no FOCUS export file (.csv, .csv.gz, .parquet) matches {source.path} yet",
            fix="check the path (relative paths start at the config file's folder) and that the export ran",
        )  # fmt: skip


def probe_simulated(source: Any, ctx: DoctorContext) -> Iterator[Finding]:
    yield Finding("source", f"{source.name} ({source.type})", "ok", "simulated: needs no cloud access")


# -- the report ---------------------------------------------------------------------------------------


def format_report(report: DoctorReport, config_path: Path | str) -> list[str]:
    """Human-readable lines: problems first, then warnings, then what passed."""
    lines = [f"spendwatch doctor: {config_path}"]
    labels = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "skip": "skip"}
    for finding in sorted(report.findings, key=lambda f: STATUS_ORDER[f.status]):
        lines.append(f"  {labels[finding.status]}  {finding.check:<11} {finding.subject}: {finding.message}")
        if finding.fix and finding.status in ("fail", "warn", "skip"):
            lines.append(f"        fix: {finding.fix}")
    lines.append(report.summary())
    return lines
