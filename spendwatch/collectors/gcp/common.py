"""What every GCP collector shares: retries, clients, validated identifiers and readable errors.

Errors: a Google API failure becomes one line naming what spendwatch was doing, the IAM permission
that call needs and the resource (``PERMISSIONS`` maps every API method the collectors call to the
permission it checks; ``deploy/gcp/collector-role.yaml`` grants exactly those, and a test keeps the
two in step). 429 and 5xx answers are retried with exponential backoff through the client
libraries' own ``Retry`` (configurable per source, ``retry:``), so a blip never fails a run.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from pydantic import Field

from spendwatch.config_types import Duration
from spendwatch.connections import GcpConnection, gcp_client_options, gcp_credentials
from spendwatch.errors import PermissionDeniedError, SourceError
from spendwatch.plugins import StrictModel

T = TypeVar("T")

# Every Google API method the collectors call → the IAM permission(s) it needs. The collector role
# (deploy/gcp/collector-role.yaml) must grant each; tests/collectors/gcp/test_role.py checks it.
PERMISSIONS: dict[str, tuple[str, ...]] = {
    "bigquery.tables.get": ("bigquery.tables.get",),
    # A query job: created in the job project, reading the table(s) it names.
    "bigquery.query": ("bigquery.jobs.create", "bigquery.tables.getData"),
    "bigquery.jobs.get": ("bigquery.jobs.get",),
    "bigquery.jobs.getQueryResults": ("bigquery.jobs.get",),
    "bigquery.jobs.list.all_users": ("bigquery.jobs.listAll",),
    "bigquery.information_schema.jobs_by_project": ("bigquery.jobs.listAll",),
    "bigquery.information_schema.jobs_by_organization": ("bigquery.jobs.listAll",),
    "cloudbilling.billingAccounts.list": ("billing.accounts.list", "billing.accounts.get"),
    "cloudbilling.billingAccounts.projects.list": ("billing.resourceAssociations.list",),
    # The Cloud Billing Catalog is public to any authenticated caller: no IAM permission.
    "cloudbilling.services.skus.list": (),
    "aiplatform.customJobs.list": ("aiplatform.customJobs.list",),
    "dataproc.clusters.list": ("dataproc.clusters.list",),
    "dataproc.batches.list": ("dataproc.batches.list",),
}

_RETRYABLE_REASONS = {"rateLimitExceeded", "backendError", "internalError", "badGateway", "serviceUnavailable"}

# Project ids (optionally domain-scoped: ``example.com:proj``), dataset ids and table ids, as BigQuery
# allows them. Table names cannot be query parameters, so they are validated and backtick-quoted.
PROJECT_ID = r"(?:[a-z0-9][a-z0-9.-]*[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]"
_TABLE_PATH = re.compile(
    rf"^(?P<project>{PROJECT_ID})\.(?P<dataset>[A-Za-z0-9_]{{1,1024}})\.(?P<table>[A-Za-z0-9_-]{{1,1024}})$"
)
_PROJECT = re.compile(rf"^{PROJECT_ID}$")
_REGION = re.compile(r"^[a-z]+(?:-[a-z0-9]+)+$|^(?:us|eu)$", re.IGNORECASE)


class RetrySettings(StrictModel):
    """Exponential backoff for 429 / 5xx answers (google.api_core Retry)."""

    initial: Duration = Field(default=timedelta(seconds=1), description="first wait")
    maximum: Duration = Field(default=timedelta(seconds=60), description="longest single wait")
    multiplier: float = Field(default=2.0, ge=1.0, le=10.0)
    deadline: Duration = Field(default=timedelta(minutes=10), description="give up after this long")
    call_timeout: Duration = Field(
        default=timedelta(seconds=60), description="how long one call may wait for its answer (then it is retried)"
    )

    @property
    def call_seconds(self) -> float:
        return max(self.call_timeout.total_seconds(), 0.001)


def retryable(exc: BaseException) -> bool:
    """429, 5xx, BigQuery's retryable ``reason`` codes (it sends rateLimitExceeded as 403) and dropped connections."""
    from google.api_core import exceptions as gexc
    from requests import exceptions as rexc

    if isinstance(exc, (rexc.ConnectionError, rexc.Timeout, ConnectionError)):
        return True
    reason = _reason(exc)
    if reason in _RETRYABLE_REASONS:
        return True
    return isinstance(
        exc,
        (
            gexc.TooManyRequests,
            gexc.InternalServerError,
            gexc.BadGateway,
            gexc.ServiceUnavailable,
            gexc.GatewayTimeout,
        ),
    )


def make_retry(settings: RetrySettings) -> Any:
    """A ``google.api_core.retry.Retry`` for ``settings``."""
    from google.api_core.retry import Retry

    return Retry(
        predicate=retryable,
        initial=settings.initial.total_seconds(),
        maximum=settings.maximum.total_seconds(),
        multiplier=settings.multiplier,
        timeout=settings.deadline.total_seconds(),
    )


def _reason(exc: BaseException) -> str | None:
    errors = getattr(exc, "errors", None)
    if errors and isinstance(errors[0], dict):
        reason = errors[0].get("reason")
        return str(reason) if reason else None
    return None


def check_table_path(value: str) -> str:
    """``project.dataset.table`` or raise ``ValueError`` (used by config validators)."""
    text = value.strip().strip("`")
    if not _TABLE_PATH.match(text):
        raise ValueError(
            f"{value!r} is not a BigQuery table path 'project.dataset.table' "
            "(letters, digits and _ in dataset and table names)"
        )
    return text


def check_project_id(value: str) -> str:
    if not _PROJECT.match(value):
        raise ValueError(f"{value!r} is not a Google Cloud project id")
    return value


def check_region(value: str) -> str:
    if not _REGION.match(value):
        raise ValueError(f"{value!r} is not a Google Cloud region (e.g. us-central1) or multi-region (us, eu)")
    return value.lower()


def quote_table(path: str) -> str:
    """A validated table path in backticks, the only piece of SQL ever built from config."""
    return f"`{check_table_path(path)}`"


def bigquery_client(connection: GcpConnection, clients: dict[str, Any], *, location: str | None = None) -> Any:
    """The injected ``bigquery_client`` or a real one for ``connection``."""
    injected = clients.get("bigquery_client")
    if injected is not None:
        return injected
    from google.cloud import bigquery

    return bigquery.Client(
        project=connection.project,
        credentials=gcp_credentials(connection),
        client_options=gcp_client_options(connection, "bigquery") or None,
        location=location,
    )


def explain(exc: Exception, *, source: str, doing: str, method: str, resource: str) -> SourceError:
    """One line for a failed Google call: what we were doing, the permission it needs, the resource."""
    from google.api_core import exceptions as gexc

    message = _first_line(getattr(exc, "message", None) or str(exc))
    permission = " and ".join(PERMISSIONS.get(method) or (f"access to {method}",))
    if isinstance(exc, (gexc.Forbidden, gexc.PermissionDenied, gexc.Unauthorized, gexc.Unauthenticated)):
        named = _error_info_permission(exc) or permission
        return PermissionDeniedError(
            f"source {source}: permission denied while {doing}: the credentials need {named} on {resource} "
            f"(Google said: {message})"
        )
    if isinstance(exc, gexc.NotFound):
        return SourceError(f"source {source}: {resource} was not found while {doing} (Google said: {message})")
    if isinstance(exc, gexc.GoogleAPICallError):
        return SourceError(f"source {source}: {doing} failed on {resource}: HTTP {exc.code}: {message}")
    return SourceError(f"source {source}: {doing} failed on {resource}: {type(exc).__name__}: {message}")


def _error_info_permission(exc: Exception) -> str | None:
    metadata = getattr(exc, "metadata", None)
    if isinstance(metadata, dict) and metadata.get("permission"):
        return str(metadata["permission"])
    return None


_REQUEST_PREFIX = re.compile(r"^(?:GET|POST|PUT|PATCH|DELETE) \S+: ")


def _first_line(text: str) -> str:
    """The first non-empty line, without the ``GET https://…:`` prefix api_core puts on HTTP errors."""
    for line in text.strip().splitlines():
        if line.strip():
            return _REQUEST_PREFIX.sub("", line.strip())[:500]
    return "(no message)"


def call_google(fn: Callable[[], T], *, source: str, doing: str, method: str, resource: str) -> T:
    """Run a Google client call; turn its failure into a ``SourceError`` naming permission and resource."""
    from google.api_core import exceptions as gexc
    from google.api_core.exceptions import RetryError
    from google.auth import exceptions as auth_exceptions

    try:
        return fn()
    except auth_exceptions.GoogleAuthError as exc:  # expired, revoked or unrefreshable credentials
        raise PermissionDeniedError(
            f"source {source}: Google credentials are expired or invalid while {doing} "
            f"({type(exc).__name__}: {_first_line(str(exc))}); refresh them (workload identity, "
            "`gcloud auth application-default login` or the service-account key)"
        ) from None
    except RetryError as exc:
        cause = exc.cause if isinstance(exc.cause, Exception) else exc
        raise SourceError(
            f"source {source}: {doing} on {resource} kept failing after retries: {_first_line(str(cause))}"
        ) from None
    except gexc.GoogleAPIError as exc:
        raise explain(exc, source=source, doing=doing, method=method, resource=resource) from None
