"""How spendwatch reaches each cloud: the config blocks and the client factories.

Collectors, kill-switch actions and ``doctor`` all build their clients here, so one place decides
credentials (each cloud's default chain, never keys in the config), retries, regions and endpoints.
``endpoint_url`` / ``endpoints`` exist for VPC endpoints, LocalStack and tests (moto on 127.0.0.1,
local Google API servers); they are the seam through which tests swap the cloud.
"""

from __future__ import annotations

import functools
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import Field

from spendwatch.config_types import Duration
from spendwatch.plugins import StrictModel


class AwsConnection(StrictModel):
    """How to reach AWS: the default credential chain, optionally a profile and an assumed role."""

    region: str | None = Field(default=None, description="default region (else the SDK's default)")
    profile: str | None = Field(default=None, description="a named profile from ~/.aws/config")
    role_arn: str | None = Field(
        default=None,
        pattern=r"^arn:aws[a-z-]*:iam::\d{12}:role/.+$",
        description="assume this role first (e.g. into a member account of an Organization)",
    )
    external_id: str | None = None
    role_session_name: str = "spendwatch"
    endpoint_url: str | None = Field(default=None, description="override every service endpoint (tests, VPC)")
    max_attempts: int = Field(
        default=8, ge=1, le=20, description="tries per call, the first included (botocore adaptive retries)"
    )
    timeout: Duration = Field(
        default=timedelta(seconds=60),
        description="how long one call may wait to connect and for its answer (a hung endpoint fails, then retries)",
    )


@functools.cache
def _service_models() -> Any:
    """One botocore loader for the process: every session reads the (large) service models once.

    A fresh boto3 session parses each service's JSON model again — about a second of CPU for S3 —
    and the daemon makes a session per collection; the loader only caches what it read from disk.
    """
    from botocore.loaders import create_loader

    return create_loader()


def _new_session(profile: str | None = None, region: str | None = None, **credentials: Any) -> Any:
    import boto3  # boto3 is slow to import; only code that talks to AWS pays for it
    import botocore.session

    core = botocore.session.Session(profile=profile)
    core.register_component("data_loader", _service_models())
    return boto3.Session(botocore_session=core, region_name=region, **credentials)


def aws_session(connection: AwsConnection, base: Any | None = None) -> Any:
    """A boto3 session for ``connection``; with ``role_arn``, one holding the assumed role's credentials."""
    session = base or _new_session(connection.profile, connection.region)
    if connection.role_arn is None:
        return session
    sts = aws_client(connection, "sts", session=session)
    params: dict[str, Any] = {"RoleArn": connection.role_arn, "RoleSessionName": connection.role_session_name}
    if connection.external_id:
        params["ExternalId"] = connection.external_id
    credentials = sts.assume_role(**params)["Credentials"]
    return _new_session(
        region=connection.region or session.region_name,
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )


def aws_client(connection: AwsConnection, service: str, *, session: Any, region: str | None = None) -> Any:
    """A boto3 client with adaptive retries and the configured endpoint."""
    from botocore.config import Config as BotoConfig

    seconds = max(connection.timeout.total_seconds(), 0.001)
    config = BotoConfig(
        retries={"mode": "adaptive", "total_max_attempts": connection.max_attempts},
        user_agent_extra="spendwatch",
        connect_timeout=seconds,
        read_timeout=seconds,
    )
    return session.client(
        service,
        region_name=region or connection.region or session.region_name or "us-east-1",
        endpoint_url=connection.endpoint_url,
        config=config,
    )


class GcpConnection(StrictModel):
    """How to reach Google Cloud: Application Default Credentials unless told otherwise."""

    project: str | None = Field(default=None, description="project that runs (and pays for) spendwatch's own queries")
    credentials_file: Path | None = Field(
        default=None, description="a service-account key file; prefer workload identity / ADC"
    )
    impersonate_service_account: str | None = None
    endpoints: dict[str, str] = Field(
        default_factory=dict,
        description="API name → base URL override (bigquery, cloudbilling, dataproc, aiplatform …); tests only",
    )
    anonymous: bool = Field(default=False, description="no credentials at all: local emulators and tests only")


def gcp_credentials(connection: GcpConnection) -> Any:
    """Credentials for ``connection`` (ADC by default)."""
    if connection.anonymous:
        from google.auth.credentials import AnonymousCredentials

        return AnonymousCredentials()
    scopes = ["https://www.googleapis.com/auth/cloud-platform"]
    if connection.credentials_file is not None:
        from google.oauth2 import service_account

        credentials: Any = service_account.Credentials.from_service_account_file(
            str(connection.credentials_file), scopes=scopes
        )
    else:
        import google.auth

        credentials, _ = google.auth.default(scopes=scopes)
    if connection.impersonate_service_account:
        from google.auth import impersonated_credentials

        credentials = impersonated_credentials.Credentials(
            source_credentials=credentials,
            target_principal=connection.impersonate_service_account,
            target_scopes=scopes,
        )
    return credentials


def gcp_client_options(connection: GcpConnection, api: str) -> dict[str, Any]:
    """``client_options`` for a Google client: the endpoint override for ``api`` if configured."""
    endpoint = connection.endpoints.get(api)
    return {"api_endpoint": endpoint} if endpoint else {}
