"""The ``killswitch:`` config section: rules (when → do → how), protection, caps, connections.

Everything is validated when the config is loaded, before anything runs: a rule naming an unknown
verb or resource type, a verb that no named resource type supports, options an action does not
take, an irreversible-only rule in ``enforce`` without ``allow_irreversible: true``, or a
``disable-billing`` rule without the section's explicit ``allow_disable_billing: true`` are config
errors naming the file, line and key.
"""

from __future__ import annotations

import fnmatch
import re
from datetime import timedelta
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator

from spendwatch.collectors.base import DEFAULT_OWNER_TAGS
from spendwatch.config_types import Duration, Name
from spendwatch.connections import AwsConnection, GcpConnection
from spendwatch.k8s_client import EXTRA_HINT, KubernetesConnection, kubernetes_installed
from spendwatch.killswitch import aws, aws_jobs, gcp, k8s  # noqa: F401  (register the actions)
from spendwatch.killswitch.base import RESOURCE_TYPES, actions_for, known_verbs, resource_types_for_verb
from spendwatch.plugins import StrictModel
from spendwatch.secrets import SecretUrl
from spendwatch.store.records import SEVERITY_ORDER
from spendwatch.store.schema import JOB_STATES_RUNNING

Mode = Literal["dry-run", "approve", "enforce"]
SeverityName = Literal["low", "medium", "high", "critical"]
IncidentKindName = Literal["spike", "shift", "leak", "burst", "guard"]

DEFAULT_PROTECT_TAGS: dict[str, list[str]] = {
    "spendwatch:protect": ["true", "yes", "1"],
    "spendwatch-protect": ["true", "yes", "1"],  # GCP labels cannot hold ':'
    "env": ["prod", "production"],
    "environment": ["prod", "production"],
}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# States of job records a job rule looks at by default (collectors normalise to upper case).
DEFAULT_JOB_STATES: tuple[str, ...] = (*sorted(JOB_STATES_RUNNING), "ACTIVE", "STOPPING", "PROVISIONING")


def _globs_match(patterns: list[str], value: str | None) -> bool:
    if not patterns:
        return True
    if value is None:
        return False
    return any(fnmatch.fnmatchcase(value, pattern) for pattern in patterns)


class IncidentWhen(StrictModel):
    """Which incidents a rule acts on. Every given condition must hold."""

    min_severity: SeverityName | None = Field(default=None, description="low < medium < high < critical")
    min_impact: float | None = Field(default=None, ge=0, description="excess over expected, in the incident currency")
    min_impact_pct: float | None = Field(default=None, ge=0, description="excess as a fraction of expected (0.5 = 50%)")
    monitors: list[str] = Field(default_factory=list, description="monitor names (globs)")
    kinds: list[IncidentKindName] = Field(default_factory=list, description="spike, shift, leak, burst, guard")
    statuses: list[str] = Field(default_factory=lambda: ["open", "ongoing"])
    dimensions: dict[str, list[str]] = Field(
        default_factory=dict, description="dimension → allowed values (globs), e.g. {provider: [gcp]}"
    )
    currencies: list[str] = Field(default_factory=list)

    def severity_ok(self, severity: str) -> bool:
        if self.min_severity is None:
            return True
        rank: dict[str, int] = {name: i for i, name in enumerate(SEVERITY_ORDER)}
        return rank.get(severity, -1) >= rank[self.min_severity]


class JobWhen(StrictModel):
    """Which job records (the ``jobs`` table) a rule acts on. Every given condition must hold."""

    platforms: list[str] = Field(default_factory=list, description="bigquery, athena, sagemaker, emr, glue …")
    min_estimated_cost: float | None = Field(default=None, ge=0, description="cost so far")
    min_projected_cost: float | None = Field(default=None, ge=0, description="cost at completion, if projected")
    min_runtime: Duration | None = Field(default=None, description="running for at least this long")
    accounts: list[str] = Field(default_factory=list, description="AWS accounts / GCP projects (globs)")
    owners: list[str] = Field(default_factory=list, description="owners (globs)")
    users: list[str] = Field(default_factory=list, description="users / principals (globs)")
    labels: dict[str, list[str]] = Field(default_factory=dict, description="label → allowed values (globs)")
    states: list[str] = Field(default_factory=lambda: list(DEFAULT_JOB_STATES))
    currencies: list[str] = Field(default_factory=list)

    def matches_text(self, account: str | None, owner: str | None, user: str | None) -> bool:
        return (
            _globs_match(self.accounts, account) and _globs_match(self.owners, owner) and _globs_match(self.users, user)
        )


class When(StrictModel):
    incident: IncidentWhen | None = None
    job: JobWhen | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> When:
        if (self.incident is None) == (self.job is None):
            raise ValueError("a rule's 'when' names exactly one of 'incident' or 'job'")
        return self


class HookConfig(StrictModel):
    """Run an executable or POST to a webhook; its exit status / HTTP status is the result.

    The URLs, header values and ``env`` values are secrets (``spendwatch.secrets``): never printed,
    journaled or logged; a hook is named by its program or by its URL's host.
    """

    command: list[str] | None = Field(default=None, min_length=1, description="argv; the payload arrives on stdin")
    url: SecretUrl | None = Field(default=None, description="POST the JSON payload here (a secret: use ${ENV})")
    headers: dict[str, SecretStr] = Field(default_factory=dict, description="extra HTTP headers, secrets (use ${ENV})")
    env: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="environment given to the command besides PATH, HOME, LANG, TZ … (values are secrets)",
    )
    pass_env: list[str] = Field(
        default_factory=list, description="names of spendwatch's own environment variables the command also gets"
    )
    timeout: Duration = Field(default=timedelta(seconds=30))
    undo_command: list[str] | None = Field(default=None, min_length=1, description="makes the hook reversible")
    undo_url: SecretUrl | None = None

    @model_validator(mode="after")
    def _one_target(self) -> HookConfig:
        if (self.command is None) == (self.url is None):
            raise ValueError("a hook names exactly one of 'command' or 'url'")
        if self.undo_command is not None and self.undo_url is not None:
            raise ValueError("a hook names at most one of 'undo_command' or 'undo_url'")
        if self.timeout <= timedelta(0) or self.timeout > timedelta(minutes=15):
            raise ValueError("hook timeout must be between 1s and 15m")
        for name in [*self.env, *self.pass_env]:
            if not _ENV_NAME.match(name):
                raise ValueError(f"hook env: {name!r} is not an environment variable name")
        if (self.env or self.pass_env) and self.command is None and self.undo_command is None:
            raise ValueError("a hook's 'env' and 'pass_env' are for a command, not a url")
        return self

    @property
    def reversible(self) -> bool:
        return self.undo_command is not None or self.undo_url is not None


class Rule(StrictModel):
    """when (an incident or a job) → do (a verb) → how (dry-run, approve or enforce)."""

    name: Name
    description: str = ""
    enabled: bool = True
    when: When
    do: str = Field(description="the verb: stop, cancel, terminate, pause, suspend, scale-to-zero, shrink …, or hook")
    resource_types: list[str] = Field(default_factory=list, description="only these resource types (default: all)")
    how: Mode = Field(default="dry-run", description="dry-run (default), approve or enforce")
    allow_irreversible: bool = Field(default=False, description="let irreversible actions run in enforce mode")
    max_targets: int = Field(
        default=10, ge=1, description="a rule matching more targets than this in one run acts on none"
    )
    approval_expiry: Duration | None = Field(default=None, description="overrides the section's approval_expiry")
    options: dict[str, Any] = Field(default_factory=dict, description="action options (e.g. hibernate: true)")
    hook: HookConfig | None = None

    @field_validator("do")
    @classmethod
    def _known_verb(cls, value: str) -> str:
        verbs = known_verbs()
        if value not in verbs:
            raise ValueError(f"unknown verb {value!r} (known: {', '.join(verbs)})")
        return value

    @field_validator("resource_types")
    @classmethod
    def _known_types(cls, value: list[str]) -> list[str]:
        for name in value:
            if name not in RESOURCE_TYPES:
                raise ValueError(f"unknown resource type {name!r} (known: {', '.join(sorted(RESOURCE_TYPES))})")
        return value

    @model_validator(mode="after")
    def _coherent(self) -> Rule:
        if self.do == "hook":
            if self.hook is None:
                raise ValueError(f"rule {self.name}: 'do: hook' needs a 'hook:' block (command or url)")
            if self.options:
                raise ValueError(f"rule {self.name}: a hook takes no 'options' (configure it under 'hook:')")
            return self
        if self.hook is not None:
            raise ValueError(f"rule {self.name}: 'hook:' is only for 'do: hook'")
        types = self.effective_types()
        if not types:
            supported = ", ".join(resource_types_for_verb(self.do))
            raise ValueError(f"rule {self.name}: no listed resource type supports {self.do!r} (supported: {supported})")
        actions = [a for t in types for a in actions_for(t, self.do)]
        for action in actions:
            try:
                action.options_model.model_validate(self.options)
            except ValidationError as exc:
                error = exc.errors(include_url=False)[0]
                where = ".".join(str(part) for part in error["loc"])
                problem = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
                raise ValueError(f"rule {self.name}: options for {action.plugin_name}: {where}: {problem}") from None
        if self.how == "enforce" and not self.allow_irreversible and all(not a.reversible for a in actions):
            raise ValueError(
                f"rule {self.name}: {self.do!r} cannot be undone; 'how: enforce' needs 'allow_irreversible: true' "
                "(or use 'how: approve')"
            )
        return self

    def effective_types(self) -> list[str]:
        """The resource types this rule may act on: the listed ones that support the verb, or all that do."""
        if self.do == "hook":
            return list(self.resource_types) or sorted(RESOURCE_TYPES)
        supported = resource_types_for_verb(self.do)
        if not self.resource_types:
            return supported
        unsupported = [t for t in self.resource_types if t not in supported]
        if unsupported:
            raise ValueError(
                f"rule {self.name}: {', '.join(unsupported)} cannot {self.do!r} "
                f"(types that can: {', '.join(supported) or 'none'})"
            )
        return list(self.resource_types)


def _identity(name: str) -> str:
    return name.strip().casefold()


class Protection(StrictModel):
    """What is never touched, whatever a rule says."""

    tags: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_PROTECT_TAGS.items()},
        description="tag/label key → values that protect a resource (any spelling of the key, case-insensitive "
        "values; conflicting spellings protect); [] means any value",
    )
    accounts: list[str] = Field(default_factory=list, description="AWS accounts never acted on (globs)")
    projects: list[str] = Field(default_factory=list, description="GCP projects never acted on (globs)")
    resources: list[str] = Field(default_factory=list, description="resource ids never acted on (globs)")
    owners: list[str] = Field(default_factory=list, description="owners whose resources are never acted on (globs)")
    namespaces: list[str] = Field(
        default_factory=lambda: ["kube-system", "kube-public", "kube-node-lease"],
        description="Kubernetes namespaces never acted on (globs of 'namespace' or 'cluster/namespace')",
    )
    clusters: list[str] = Field(default_factory=list, description="Kubernetes clusters never acted on (globs)")


class Caps(StrictModel):
    """The circuit breaker: beyond these, actions are skipped (and say why)."""

    max_actions_per_run: int = Field(default=5, ge=0, description="actions executed in one run")
    max_actions_per_hour: int = Field(default=10, ge=0, description="actions executed in any rolling hour")
    max_at_stake_per_run: float | None = Field(
        default=None, ge=0, description="sum of the $ at stake of the actions one run may execute"
    )


class KubernetesClusters(StrictModel):
    """The clusters Kubernetes actions reach, by the name job records and cost lines give them."""

    clusters: dict[str, KubernetesConnection] = Field(
        default_factory=dict,
        description="cluster name → connection (kubeconfig context, in-cluster …) and where it runs "
        "(provider, account, region: the scope its workloads are acted on in)",
    )


class KillSwitchConfig(StrictModel):
    """The kill switch. With no rules it does nothing; every rule is dry-run unless it says otherwise."""

    enabled: bool = True
    rules: list[Rule] = Field(default_factory=list)
    approvers: list[str] = Field(
        default_factory=list,
        description="who may approve or reject an action (names as given to --as, emails …; case-insensitive)",
    )
    protection: Protection = Field(default_factory=Protection)
    caps: Caps = Field(default_factory=Caps)
    approval_expiry: Duration = Field(default=timedelta(hours=24), description="approvals not given by then expire")
    allow_disable_billing: bool = Field(
        default=False, description="the extra opt-in for GCP disable-billing (Google warns it can delete resources)"
    )
    owner_tags: list[str] = Field(
        default_factory=lambda: [*DEFAULT_OWNER_TAGS, "spendwatch-owner"],
        description="tag/label keys naming a resource's owner when re-read (first match wins)",
    )
    aws: AwsConnection = Field(default_factory=AwsConnection)
    aws_accounts: dict[str, AwsConnection] = Field(
        default_factory=dict, description="per-account connection (e.g. a role to assume in a member account)"
    )
    gcp: GcpConnection = Field(default_factory=GcpConnection)
    kubernetes: KubernetesClusters = Field(default_factory=KubernetesClusters)

    @model_validator(mode="after")
    def _checks(self) -> KillSwitchConfig:
        # A cluster that is only named (auth: none, no server) is never reached: it needs no client.
        if any(c.reachable for c in self.kubernetes.clusters.values()) and not kubernetes_installed():
            raise ValueError(f"kubernetes.clusters: {EXTRA_HINT}")
        seen: set[str] = set()
        for rule in self.rules:
            if rule.name in seen:
                raise ValueError(f"killswitch.rules: the name {rule.name!r} is used twice")
            seen.add(rule.name)
            if rule.do == "disable-billing" and not self.allow_disable_billing:
                raise ValueError(
                    f"rule {rule.name}: disable-billing needs 'allow_disable_billing: true' in the killswitch "
                    "section (Google warns disabling billing can delete resources)"
                )
            if rule.how == "approve" and not self.approvers:
                raise ValueError(
                    f"rule {rule.name}: 'how: approve' needs killswitch.approvers (the people who may approve); "
                    "with nobody listed its actions could only expire"
                )
        for account in self.aws_accounts:
            if not account.isdigit() or len(account) != 12:
                raise ValueError(f"aws_accounts: {account!r} is not a 12-digit AWS account id")
        if any(not _identity(name) for name in self.approvers):
            raise ValueError("approvers: an approver is an empty name")
        return self

    def may_approve(self, identity: str) -> bool:
        """Whether ``identity`` may approve or reject actions: it is on ``approvers`` (case-insensitive).

        The one answer every approval path uses (the CLI's ``--as``, approval links from the digest).
        It is an allow-list of names, not authentication: who can run the CLI against the store, or
        hold a signed link, is what proves the name.
        """
        wanted = _identity(identity)
        return bool(wanted) and wanted in {_identity(name) for name in self.approvers}

    def approver_refusal(self, identity: str) -> str | None:
        """One line saying why ``identity`` may not approve, or ``None`` when it may."""
        if self.may_approve(identity):
            return None
        return f"{identity!r} is not in killswitch.approvers: only those listed may approve or reject"

    def aws_connection(self, account: str | None) -> AwsConnection:
        if account is not None and account in self.aws_accounts:
            return self.aws_accounts[account]
        return self.aws

    def rule(self, name: str) -> Rule | None:
        return next((r for r in self.rules if r.name == name), None)

    def expiry_for(self, rule: Rule | None) -> timedelta:
        if rule is not None and rule.approval_expiry is not None:
            return rule.approval_expiry
        return self.approval_expiry
