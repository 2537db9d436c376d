"""How spendwatch reaches a Kubernetes cluster: the connection block and the client factory.

The official ``kubernetes`` client is an optional extra (``pip install 'spendwatch[kubernetes]'``):
only a config that talks to a cluster needs it, and such a config fails when it is loaded, in one
line naming the extra, when it is missing (``require_kubernetes``). Credentials are the cluster's
own: the pod's service-account token in-cluster, else a kubeconfig context (which may run an exec
plugin such as ``aws eks get-token`` or ``gke-gcloud-auth-plugin``); never a token in the config.
``server`` exists for tests (the local API server double) and for clusters reached through a proxy.
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
        description="auto: in-cluster when running in a pod, else the kubeconfig; none: no credentials (tests)",
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


def api_client(connection: KubernetesConnection) -> Any:
    """A ``kubernetes.client.ApiClient`` for ``connection``; ``ActionError`` (one line) when it cannot be built."""
    if not kubernetes_installed():
        raise ActionError(EXTRA_HINT)
    from kubernetes import client, config

    configuration = client.Configuration()
    try:
        if connection.auth == "none":
            if connection.server is None:
                raise ActionError("kubernetes connection with auth: none needs a server URL")
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
