"""What every kill-switch action shares: the target it acts on, what it observes, and the registry.

An action is a small class registered under a kebab-case name (``ec2-instance-stop``), as in
cloud-custodian. It declares, as class attributes, everything the engine and the safety checks need
to know before it runs:

* ``provider`` / ``resource_type`` / ``verb`` — what it acts on and the rule verb (``do:``) it answers;
* ``permissions`` — every cloud permission ``describe`` + ``execute`` need (``undo_permissions`` for
  ``undo``); tests check each call an action makes is covered by these and by the shipped policy;
* ``valid_origin_states`` — the states it may act from (re-read right before acting);
* ``done_states`` — the states that show it took effect (used to reconcile a crash);
* ``reversible`` — whether ``undo`` restores what it changed; irreversible actions never run in
  ``enforce`` mode unless the rule says ``allow_irreversible: true``;
* ``options_model`` — the pydantic model of the rule's ``options:`` for this action.

The methods talk to the cloud through an ``ActionContext``, which builds (and caches) clients from
the configured connections, or hands out the clients a caller injected (tests, the daemon).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel

from spendwatch.plugins import Plugin, Registry, StrictModel

# Resource types each provider's actions may act on; a rule naming another one is a config error.
RESOURCE_TYPES: dict[str, str] = {
    # AWS
    "ec2-instance": "aws",
    "autoscaling-group": "aws",
    "rds-instance": "aws",
    "redshift-cluster": "aws",
    "emr-cluster": "aws",
    "sagemaker-training-job": "aws",
    "sagemaker-processing-job": "aws",
    "sagemaker-transform-job": "aws",
    "sagemaker-notebook-instance": "aws",
    "athena-query": "aws",
    "glue-job-run": "aws",
    "batch-job": "aws",
    "batch-job-queue": "aws",
    "aws-account": "aws",
    # Google Cloud
    "bigquery-job": "gcp",
    "gce-instance": "gcp",
    "dataproc-cluster": "gcp",
    "vertex-custom-job": "gcp",
    "gke-node-pool": "gcp",
    "gcp-project": "gcp",
    # Kubernetes (EKS, GKE or any cluster): see collectors/k8s/ids.py
    "k8s-deployment": "kubernetes",
    "k8s-statefulset": "kubernetes",
    "k8s-job": "kubernetes",
    "k8s-cronjob": "kubernetes",
    "k8s-pod": "kubernetes",
    "k8s-rayjob": "kubernetes",
    "k8s-raycluster": "kubernetes",
    "k8s-pytorchjob": "kubernetes",
    "k8s-tfjob": "kubernetes",
}


@dataclass(frozen=True)
class Target:
    """A resource a rule may act on, with what spendwatch knew about it when it planned.

    ``resource_id`` is canonical per type (see ``targets.py``): ``i-0abc`` for an instance,
    ``projects/p/zones/z/instances/n`` for a GCE instance, ``job-name/jr_123`` for a Glue run …
    """

    provider: str
    resource_type: str
    resource_id: str
    account: str | None = None
    region: str | None = None
    owner: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    name: str | None = None
    state: str | None = None
    saving_per_hour: float | None = None
    at_stake: float | None = None
    currency: str = "USD"
    origin: str = "job"  # job | incident-job | incident-resource | incident-account

    @property
    def key(self) -> str:
        return f"{self.provider}:{self.resource_type}:{self.account or '-'}:{self.region or '-'}:{self.resource_id}"

    def describe(self) -> str:
        where = "/".join(part for part in (self.account, self.region) if part)
        return f"{self.resource_type} {self.resource_id}" + (f" in {where}" if where else "")

    def as_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "resource_type": self.resource_type,
            "resource_id": self.resource_id,
            "account": self.account,
            "region": self.region,
            "owner": self.owner,
            "labels": dict(self.labels),
            "name": self.name,
            "state": self.state,
            "saving_per_hour": self.saving_per_hour,
            "at_stake": self.at_stake,
            "currency": self.currency,
            "origin": self.origin,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Target:
        return cls(
            provider=str(data["provider"]),
            resource_type=str(data["resource_type"]),
            resource_id=str(data["resource_id"]),
            account=data.get("account"),
            region=data.get("region"),
            owner=data.get("owner"),
            labels=dict(data.get("labels") or {}),
            name=data.get("name"),
            state=data.get("state"),
            saving_per_hour=data.get("saving_per_hour"),
            at_stake=data.get("at_stake"),
            currency=str(data.get("currency") or "USD"),
            origin=str(data.get("origin") or "job"),
        )


@dataclass(frozen=True)
class Observed:
    """The target as re-read from the cloud right before acting."""

    state: str
    labels: Mapping[str, str] = field(default_factory=dict)
    owner: str | None = None
    # What undo needs to restore (sizes, counts …), saved in the journal before the change.
    snapshot: Mapping[str, Any] = field(default_factory=dict)
    # Set when the cloud itself protects the resource (termination / deletion protection): never act.
    refusal: str | None = None


@dataclass(frozen=True)
class Outcome:
    """What an action did: a short result for people and machine-readable detail."""

    summary: str
    detail: Mapping[str, Any] = field(default_factory=dict)


class NoOptions(StrictModel):
    """Actions without options accept an empty ``options:`` only."""


class ActionContext:
    """Clients for actions: injected ones first (by key), else built from the configured connections.

    Keys of ``clients``: ``aws_session`` (a boto3 session for every account), ``aws_session:<account>``,
    ``aws:<service>`` or ``aws:<service>:<region>`` (a ready client, e.g. a stubbed one),
    ``gcp_credentials``, ``gcp:<name>`` (a ready Google client, e.g. ``gcp:bigquery``), ``k8s:<cluster>``
    or ``k8s`` (a ``kubernetes.client.ApiClient``), ``http`` (a callable that POSTs a webhook; tests only).

    ``offline`` (a reason) builds no client at all: every cloud and cluster call is refused with it. The
    demo runs so, because whatever credentials the machine holds must not be used on a simulated estate.
    """

    def __init__(self, settings: Any, clients: Mapping[str, Any] | None = None, *, offline: str | None = None) -> None:
        self.settings = settings  # KillSwitchConfig; typed loosely to avoid an import cycle
        self.clients: dict[str, Any] = dict(clients or {})
        self.offline = offline
        self._cache: dict[str, Any] = {}

    def _refuse_if_offline(self, what: str) -> None:
        if self.offline is not None:
            from spendwatch.errors import ActionError

            raise ActionError(f"no {what} client: {self.offline}")

    # -- AWS -----------------------------------------------------------------------------------

    def aws_client(self, service: str, target: Target) -> Any:
        self._refuse_if_offline(f"AWS {service}")
        region = target.region
        for key in (f"aws:{service}:{region}", f"aws:{service}"):
            if key in self.clients:
                return self.clients[key]
        cache_key = f"aws:{service}:{target.account}:{region}"
        if cache_key not in self._cache:
            from spendwatch.connections import aws_client

            connection = self.settings.aws_connection(target.account)
            self._cache[cache_key] = aws_client(
                connection, service, session=self._aws_session(target.account), region=region
            )
        return self._cache[cache_key]

    def _aws_session(self, account: str | None) -> Any:
        for key in (f"aws_session:{account}", "aws_session"):
            if key in self.clients:
                return self.clients[key]
        cache_key = f"aws_session:{account}"
        if cache_key not in self._cache:
            from spendwatch.connections import aws_session

            self._cache[cache_key] = aws_session(self.settings.aws_connection(account))
        return self._cache[cache_key]

    # -- Google Cloud --------------------------------------------------------------------------

    def gcp_client(self, name: str, build: Any) -> Any:
        """A Google client by name; ``build(credentials, client_options)`` makes one when none is injected."""
        self._refuse_if_offline(f"Google {name}")
        key = f"gcp:{name}"
        if key in self.clients:
            return self.clients[key]
        if key not in self._cache:
            from spendwatch.connections import gcp_client_options, gcp_credentials

            connection = self.settings.gcp
            credentials = self.clients.get("gcp_credentials") or gcp_credentials(connection)
            api = name.split(".", 1)[0]
            self._cache[key] = build(credentials, gcp_client_options(connection, api))
        return self._cache[key]

    # -- HTTP (webhooks) --------------------------------------------------------------------------

    def http_opener(self) -> Any:
        """The ``urllib`` opener webhooks are posted through (``http_opener`` when injected)."""
        self._refuse_if_offline("webhook")
        import urllib.request

        return self.clients.get("http_opener") or urllib.request.build_opener()

    # -- Kubernetes ----------------------------------------------------------------------------

    def k8s_client(self, cluster: str | None) -> Any:
        """An ``ApiClient`` for ``cluster`` (a name under ``killswitch.kubernetes.clusters``)."""
        self._refuse_if_offline("Kubernetes")
        for key in (f"k8s:{cluster}", "k8s"):
            if key in self.clients:
                return self.clients[key]
        cache_key = f"k8s:{cluster}"
        if cache_key not in self._cache:
            from spendwatch.errors import ActionError
            from spendwatch.k8s_client import api_client

            clusters = getattr(self.settings, "kubernetes", None)
            connection = clusters.clusters.get(cluster or "") if clusters is not None else None
            if connection is None:
                known = ", ".join(sorted(clusters.clusters)) if clusters is not None else ""
                raise ActionError(
                    f"no connection for Kubernetes cluster {cluster!r} under killswitch.kubernetes.clusters"
                    + (f" (configured: {known})" if known else "")
                )
            self._cache[cache_key] = api_client(connection)
        return self._cache[cache_key]


class Action(Plugin):
    """One verb on one resource type. Subclasses set the class attributes and the three methods."""

    provider: ClassVar[str]
    resource_type: ClassVar[str]
    verb: ClassVar[str]
    permissions: ClassVar[tuple[str, ...]] = ()
    undo_permissions: ClassVar[tuple[str, ...]] = ()
    valid_origin_states: ClassVar[frozenset[str]] = frozenset()
    done_states: ClassVar[frozenset[str]] = frozenset()
    undone_states: ClassVar[frozenset[str]] = frozenset()
    reversible: ClassVar[bool] = False
    native_dry_run: ClassVar[bool] = False
    # Irreversible by nature even where the cloud could recreate it (billing, terminate): always gated.
    options_model: ClassVar[type[BaseModel]] = NoOptions
    config_model: ClassVar[type[BaseModel]] = NoOptions

    def __init__(self, options: BaseModel, context: ActionContext) -> None:
        self.options = options
        self.context = context

    def describe(self, target: Target) -> Observed | None:
        """Re-read the target; ``None`` when it no longer exists."""
        raise NotImplementedError

    def execute(self, target: Target, observed: Observed) -> Outcome:
        """Act. Raise ``ActionError`` (one line naming the resource) when the cloud refuses."""
        raise NotImplementedError

    def dry_run(self, target: Target, observed: Observed) -> str:
        """What enforce would do; actions with a native dry-run ask the cloud (changing nothing)."""
        return f"would {self.verb} {target.describe()} (now {observed.state})"

    def undo(self, target: Target, snapshot: Mapping[str, Any]) -> Outcome:
        raise NotImplementedError(f"{self.plugin_name} cannot be undone")

    def took_effect(self, observed: Observed) -> bool:
        """Whether the target shows this action already happened (reconciling a crash)."""
        return observed.state in self.done_states

    def is_undone(self, observed: Observed, snapshot: Mapping[str, Any]) -> bool:
        """Whether the target shows the undo already happened (reconciling a crash during undo)."""
        return observed.state in self.undone_states


ACTIONS: Registry[type[Action]] = Registry("action", group="spendwatch.actions")


def register(name: str) -> Any:
    """Register an action class under ``name`` and index it by (resource type, verb)."""

    def decorate(cls: type[Action]) -> type[Action]:
        if cls.resource_type not in RESOURCE_TYPES:
            raise ValueError(f"action {name}: unknown resource type {cls.resource_type!r}")
        ACTIONS.register(name)(cls)
        cls.config_model = cls.options_model
        return cls

    return decorate


def register_resource_type(name: str, provider: str, *, platforms: Iterable[str] = ()) -> None:
    """Let plugin actions act on a new resource type (call it before registering them).

    ``platforms``: job-record platforms (as a plugin source writes them) whose job id is the canonical
    id of this resource type, so a rule on jobs finds them. Re-registering the same type with the same
    provider is harmless; another provider, or a platform already mapped elsewhere, is an error.
    """
    from spendwatch.killswitch.targets import PLATFORM_TYPES

    if RESOURCE_TYPES.get(name, provider) != provider:
        raise ValueError(f"resource type {name!r} already belongs to {RESOURCE_TYPES[name]!r}")
    for platform in platforms:
        if PLATFORM_TYPES.get(platform.lower(), name) != name:
            raise ValueError(f"job platform {platform!r} already maps to {PLATFORM_TYPES[platform.lower()]!r}")
    RESOURCE_TYPES[name] = provider
    for platform in platforms:
        PLATFORM_TYPES[platform.lower()] = name


def actions_for(resource_type: str, verb: str) -> list[type[Action]]:
    return [cls for _, cls in ACTIONS.items() if cls.resource_type == resource_type and cls.verb == verb]


def action_for(resource_type: str, verb: str) -> type[Action] | None:
    found = actions_for(resource_type, verb)
    return found[0] if found else None


def known_verbs() -> list[str]:
    verbs = {cls.verb for _, cls in ACTIONS.items()}
    verbs.add("hook")
    return sorted(verbs)


def resource_types_for_verb(verb: str) -> list[str]:
    return sorted({cls.resource_type for _, cls in ACTIONS.items() if cls.verb == verb})
