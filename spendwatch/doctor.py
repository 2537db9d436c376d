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
   the rules may act on; Kubernetes ``SelfSubjectAccessReview`` in each cluster, ``doctor_k8s``).

A missing permission of a rule that may act (``approve``/``enforce``) fails; one of a ``dry-run``
rule, or one only ``undo`` needs, warns — the daemon runs, but that rule could not act yet.
``run_doctor`` returns a ``DoctorReport``; ``DoctorReport.ok`` is False when anything failed.
Every cloud boundary is injectable through ``clients`` (``aws_session``, ``gcp_credentials``,
``gcp_http``) the same way the collectors and the kill switch take theirs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from spendwatch.clock import Clock
    from spendwatch.collectors.base import SourceConfig
    from spendwatch.config import Config

Status = Literal["ok", "warn", "fail", "skip"]
STATUS_ORDER: dict[str, int] = {"fail": 0, "warn": 1, "ok": 2, "skip": 3}


@dataclass(frozen=True)
class Finding:
    """One thing doctor looked at: what, how it went, and (when not ok) what to do about it."""

    check: str  # store | credentials | source | killswitch
    subject: str  # e.g. "aws-costs (aws-cost-explorer)", "aws identity", "gcp project my-proj"
    status: Status
    message: str
    fix: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class DoctorReport:
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(f.status == "fail" for f in self.findings)

    def count(self, status: Status) -> int:
        return sum(1 for f in self.findings if f.status == status)

    def summary(self) -> str:
        fails, warns = self.count("fail"), self.count("warn")
        if not fails and not warns:
            return f"all {len(self.findings)} check(s) passed"
        return f"{fails} problem(s) to fix, {warns} warning(s), {self.count('ok')} check(s) passed"


@dataclass(frozen=True)
class PermissionNeed:
    """A permission some kill-switch rules need: whether a rule that may act needs it, or only dry-run/undo."""

    provider: str
    permission: str
    rules: tuple[str, ...]
    blocking: bool  # needed by an approve/enforce rule to act (not just dry-run or undo)


@dataclass
class DoctorContext:
    """What the checks share: config, clock, injected clients, and GCP scopes named on the command line."""

    config: Config
    clock: Clock
    clients: dict[str, Any] = field(default_factory=dict)
    gcp_projects: tuple[str, ...] = ()
    gcp_billing_accounts: tuple[str, ...] = ()
    store_projects: tuple[str, ...] = ()
    store_billing_accounts: tuple[str, ...] = ()
    cache: dict[str, Any] = field(default_factory=dict)  # identities and sessions, per connection


SourceProbe = Callable[[Any, DoctorContext], Iterable[Finding]]


def run_doctor(
    config: Config,
    clock: Clock,
    *,
    clients: dict[str, Any] | None = None,
    gcp_projects: Iterable[str] = (),
    gcp_billing_accounts: Iterable[str] = (),
) -> DoctorReport:
    """Run every check for ``config``; never raises for what it finds (a finding says it)."""
    from spendwatch import doctor_aws, doctor_gcp, doctor_k8s

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


# -- the kill switch's needs ---------------------------------------------------------------------------


def killswitch_needs(config: Config) -> list[PermissionNeed]:
    """Every permission the enabled rules' actions declare, with the rules that need it."""
    from spendwatch.killswitch.base import actions_for

    settings = config.killswitch
    if not settings.enabled:
        return []
    acting: dict[tuple[str, str], set[str]] = {}
    other: dict[tuple[str, str], set[str]] = {}
    for rule in settings.rules:
        if not rule.enabled or rule.do == "hook":
            continue
        may_act = rule.how in ("approve", "enforce")
        for resource_type in rule.effective_types():
            for action in actions_for(resource_type, rule.do):
                for permission in action.permissions:
                    (acting if may_act else other).setdefault((action.provider, permission), set()).add(rule.name)
                for permission in action.undo_permissions:
                    other.setdefault((action.provider, permission), set()).add(rule.name)
    needs = [PermissionNeed(p, perm, tuple(sorted(rules)), True) for (p, perm), rules in acting.items()]
    needs += [
        PermissionNeed(p, perm, tuple(sorted(rules)), False)
        for (p, perm), rules in other.items()
        if (p, perm) not in acting
    ]
    return sorted(needs, key=lambda n: (n.provider, n.permission))


def permission_findings(subject: str, missing: list[PermissionNeed], fix: str) -> list[Finding]:
    """One finding for the blocking gaps (fail) and one for the rest (warn)."""
    findings = []
    blocking = [n for n in missing if n.blocking]
    minor = [n for n in missing if not n.blocking]
    if blocking:
        findings.append(Finding("killswitch", subject, "fail", "missing " + _needs_text(blocking), fix=fix))
    if minor:
        findings.append(
            Finding(
                "killswitch", subject, "warn",
                "missing (dry-run rules cannot act, undo would fail) " + _needs_text(minor), fix=fix,
            )
        )  # fmt: skip
    return findings


def _needs_text(needs: list[PermissionNeed]) -> str:
    by_rules: dict[tuple[str, ...], list[str]] = {}
    for need in needs:
        by_rules.setdefault(need.rules, []).append(need.permission)
    parts = [f"{', '.join(sorted(perms))} (rule {', '.join(rules)})" for rules, perms in sorted(by_rules.items())]
    return "; ".join(parts)


# -- helpers -------------------------------------------------------------------------------------------


def one_line(exc: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


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
