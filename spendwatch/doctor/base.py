"""What every doctor check shares: findings, the report, the context, permission needs and their wording.

The provider modules (``aws``, ``gcp``, ``k8s``) and ``core`` import this module; it imports none of them,
which is what keeps ``spendwatch.doctor`` free of import circles.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from spendwatch.clock import Clock
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
