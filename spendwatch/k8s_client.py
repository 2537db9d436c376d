"""How spendwatch reaches a Kubernetes cluster: the connection block and the client factory.

The official ``kubernetes`` client is an optional extra (``pip install 'spendwatch[kubernetes]'``):
only a config that talks to a cluster needs it, and such a config fails when it is loaded, in one
line naming the extra, when it is missing (``require_kubernetes``). Credentials are the cluster's
own: the pod's service-account token in-cluster, else a kubeconfig context (which may run an exec
plugin such as ``aws eks get-token`` or ``gke-gcloud-auth-plugin``); never a token in the config.
``server`` exists for tests (the local API server double) and for clusters reached through a proxy.

A connection also says where its cluster runs (``provider``, ``account``, ``region``): job records
of the cluster's workloads carry it, and the kill switch acts on a workload only inside the account
or project an incident names when the cluster's connection places it there (``host``). ``auth:
none`` without a ``server`` names a cluster without reaching it (the demo's): its workloads can be
planned in dry-run, never acted on.
"""

from __future__ import annotations

import contextlib
import importlib.util
from typing import Any, Literal

from pydantic import Field

from spendwatch.config_types import ConfigPath
from spendwatch.errors import ActionError, ConfigError
from spendwatch.plugins import StrictModel

EXTRA_HINT = "the Kubernetes client is not installed: pip install 'spendwatch[kubernetes]'"


def kubernetes_installed() -> bool:
    return importlib.util.find_spec("kubernetes") is not None


def require_kubernetes(what: str) -> None:
    """``ConfigError`` naming the extra when a config needs the client and it is not installed."""
    if not kubernetes_installed():
        raise ConfigError(f"{what}: {EXTRA_HINT}")


class KubernetesConnection(StrictModel):
    """One cluster: in-cluster credentials, a kubeconfig context, or (tests, proxies) a plain server URL."""

    auth: Literal["auto", "in-cluster", "kubeconfig", "none"] = Field(
        default="auto",
        description="auto: in-cluster when running in a pod, else the kubeconfig; none: no credentials "
        "(with server: tests, a proxy; without: the cluster is only named, never reached)",
    )
    kubeconfig: ConfigPath | None = Field(default=None, description="kubeconfig file (default: $KUBECONFIG, ~/.kube)")
    context: str | None = Field(default=None, description="the kubeconfig context of this cluster")
    server: str | None = Field(
        default=None, pattern=r"^https?://", description="API server URL (with auth: none, or to override)"
    )
    timeout: float = Field(default=30.0, gt=0, le=600, description="seconds per API request")
    provider: Literal["aws", "gcp", "other"] = Field(
        default="other", description="where the cluster runs (EKS, GKE or elsewhere): what its job records say"
    )
    account: str | None = Field(default=None, description="its AWS account / GCP project (for job records)")
    region: str | None = Field(default=None, description="its region (for job records)")

    @property
    def reachable(self) -> bool:
        """Whether this names a way to reach the API server (``auth: none`` without a server does not)."""
        return self.auth != "none" or self.server is not None

    def host(self, cluster: str) -> tuple[str, str | None, str | None]:
        """(provider, account, region) the cluster's workloads are recorded under.

        ``provider`` is ``aws``, ``gcp`` or ``kubernetes`` (a cluster elsewhere: on-premises …); the
        account is the AWS account / GCP project, or for a cluster elsewhere its own name when none
        is given, so per-account caps and scopes still have one value per cluster.
        """
        provider = "kubernetes" if self.provider == "other" else self.provider
        account = self.account or (cluster if provider == "kubernetes" else None)
        return provider, account, self.region


def api_client(connection: KubernetesConnection) -> Any:
    """A ``kubernetes.client.ApiClient`` for ``connection``; ``ActionError`` (one line) when it cannot be built."""
    if not connection.reachable:
        raise ActionError("the cluster is only named (auth: none without a server): it cannot be reached")
    if not kubernetes_installed():
        raise ActionError(EXTRA_HINT)
    from kubernetes import client, config

    configuration = client.Configuration()
    try:
        if connection.auth == "none":
            pass  # a plain server URL (tests, a proxy): no credentials
        elif connection.auth == "in-cluster" or (connection.auth == "auto" and _in_cluster()):
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(
                config_file=str(connection.kubeconfig) if connection.kubeconfig else None,
                context=connection.context,
                client_configuration=configuration,
            )
    except (config.ConfigException, OSError) as exc:
        raise ActionError(f"cannot load Kubernetes credentials: {str(exc).splitlines()[0]}") from None
    if connection.server is not None:
        configuration.host = connection.server.rstrip("/")
    configuration.retries = 2
    return client.ApiClient(configuration)


def _in_cluster() -> bool:
    import os
    from pathlib import Path

    return (
        bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        and Path("/var/run/secrets/kubernetes.io/serviceaccount/token").exists()
    )


def api_error_line(exc: Any, operation: str, where: str) -> str:
    """A ``kubernetes.client.ApiException`` as one line: status, reason and the API's own message."""
    import json

    status = getattr(exc, "status", None)
    message = getattr(exc, "reason", None) or str(exc)
    body = getattr(exc, "body", None)
    if body:
        with contextlib.suppress(ValueError, AttributeError):
            message = json.loads(body).get("message") or message
    hint = " (the service account lacks this RBAC permission)" if status == 403 else ""
    return f"{operation} on {where} failed: {status or ''} {message}{hint}".replace("  ", " ")
