"""What every AWS collector shares: one way to call an API, retry it, and explain its failures.

Every AWS request spendwatch makes goes through ``AwsApi.call``, which

* counts it (``aws_requests`` and ``aws_requests:<service>`` counters, exported as metrics);
* retries throttling and 5xx answers with capped exponential backoff and full jitter, *on top of*
  botocore's adaptive retry mode (botocore retries inside one call; we back off between calls, so a
  throttled account gets minutes, not milliseconds, to recover);
* turns an authorisation failure into ``PermissionDeniedError`` naming the IAM action that was
  refused (``ce:GetCostAndUsage``, ``s3:GetObject`` …) so the fix is one line in the policy;
* turns expired or missing credentials into one line that says so.

``iam_action`` is also what the tests use to check every call against ``deploy/aws/collector-policy.json``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from spendwatch.collectors.base import SourceContext
from spendwatch.connections import AwsConnection, aws_client, aws_session
from spendwatch.errors import PermissionDeniedError, SourceError

POLICY_FILE = "deploy/aws/collector-policy.json"

_DENIED = {
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "UnauthorizedException",
    "AuthorizationError",
    "AuthorizationErrorException",
    "Forbidden",
    "403",
}
_BAD_CREDENTIALS = {
    "ExpiredToken",
    "ExpiredTokenException",
    "RequestExpired",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId",
    "InvalidToken",
}
_THROTTLED = {
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "SlowDown",
    "ProvisionedThroughputExceededException",
    "LimitExceededException",
    "BandwidthLimitExceeded",
}
# IAM action names that differ from the API operation name.
_ACTION_OVERRIDES = {
    ("s3", "ListObjectsV2"): "s3:ListBucket",
    ("s3", "ListObjects"): "s3:ListBucket",
    ("s3", "HeadObject"): "s3:GetObject",
    ("s3", "HeadBucket"): "s3:ListBucket",
    ("s3", "GetBucketLocation"): "s3:GetBucketLocation",
}
_IAM_PREFIX = {"emr": "elasticmapreduce", "sagemaker": "sagemaker", "pricing": "pricing"}


def iam_action(service_name: str, operation_name: str) -> str:
    """The IAM action an API call needs, e.g. (``s3``, ``ListObjectsV2``) → ``s3:ListBucket``."""
    override = _ACTION_OVERRIDES.get((service_name, operation_name))
    if override:
        return override
    return f"{_IAM_PREFIX.get(service_name, service_name)}:{operation_name}"


def error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        if code:
            return str(code)
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status:
            return str(status)
    return ""


def _status(exc: BaseException) -> int:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    return 0


def _message(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        text = str(response.get("Error", {}).get("Message") or "")
        if text:
            return text.splitlines()[0]
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def is_retryable(exc: BaseException) -> bool:
    """Throttling, 5xx and connection failures: worth another try after a pause."""
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError, ReadTimeoutError

    if isinstance(exc, ReadTimeoutError | ConnectionError | HTTPClientError):
        return True
    if isinstance(exc, ClientError):
        return error_code(exc) in _THROTTLED or _status(exc) >= 500 or error_code(exc).startswith("5")
    return False


@dataclass
class Backoff:
    """Our own retry layer between calls: ``attempts`` tries, exponential pauses with full jitter."""

    attempts: int = 4
    base: float = 1.0
    cap: float = 30.0
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)

    def pauses(self) -> Iterator[float]:
        for attempt in range(self.attempts - 1):
            yield self.rng.uniform(0, min(self.cap, self.base * 2**attempt))


class AwsApi:
    """Clients for one source, built from its ``AwsConnection``, and the one way to call them.

    A test (or an embedding application) may put a ready ``boto3.Session`` in
    ``context.clients["boto3_session"]`` (role assumption still applies on top of it), or a ready
    client in ``context.clients["aws:<service>"]`` (e.g. one wrapped in botocore's ``Stubber``).
    """

    def __init__(self, source: str, connection: AwsConnection, context: SourceContext) -> None:
        self.source = source
        self.connection = connection
        self.context = context
        backoff = context.clients.get("aws_backoff")
        self.backoff: Backoff = backoff if isinstance(backoff, Backoff) else Backoff()
        self._session: Any | None = None
        self._clients: dict[tuple[str, str | None], Any] = {}

    @property
    def session(self) -> Any:
        if self._session is None:
            base = self.context.clients.get("boto3_session")
            self._session = self._guard("sts", "AssumeRole", lambda: aws_session(self.connection, base=base))
        return self._session

    def client(self, service: str, region: str | None = None) -> Any:
        injected = self.context.clients.get(f"aws:{service}")
        if injected is not None:
            return injected
        key = (service, region)
        if key not in self._clients:
            self._clients[key] = aws_client(self.connection, service, session=self.session, region=region)
        return self._clients[key]

    def call(self, client: Any, operation: str, **params: Any) -> dict[str, Any]:
        """Call ``operation`` (API name, e.g. ``GetCostAndUsage``) with retries and one-line errors."""
        from botocore import xform_name

        method = getattr(client, xform_name(operation))
        service = client.meta.service_model.service_name
        pauses = self.backoff.pauses()
        while True:
            self.context.count("aws_requests")
            self.context.count(f"aws_requests:{service}")
            try:
                result: dict[str, Any] = method(**params)
                return result
            except Exception as exc:
                if not is_retryable(exc):
                    raise self.explain(exc, service, operation) from None
                pause = next(pauses, None)
                if pause is None:
                    raise SourceError(
                        f"source {self.source}: {service} {operation} still failing after "
                        f"{self.backoff.attempts} attempts: {error_code(exc) or type(exc).__name__}: {_message(exc)}"
                    ) from None
                self.context.count("aws_retries")
                self.context.logger.info(
                    "source %s: %s %s: %s, retrying in %.1fs", self.source, service, operation, error_code(exc), pause
                )
                self.backoff.sleep(pause)

    def explain(self, exc: BaseException, service: str, operation: str) -> Exception:
        """The one-line spendwatch error for a failed call (or the original error if it is a bug)."""
        return explain_error(exc, self.source, service, operation)

    def _guard(self, service: str, operation: str, make: Callable[[], Any]) -> Any:
        try:
            return make()
        except Exception as exc:
            raise self.explain(exc, service, operation) from None


def explain_error(exc: BaseException, source: str, service: str, operation: str) -> Exception:
    from botocore.exceptions import ClientError, NoCredentialsError, NoRegionError, PartialCredentialsError

    action = iam_action(service, operation)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return PermissionDeniedError(
            f"source {source}: no AWS credentials found for {action} (set a profile, role_arn or the default chain)"
        )
    if isinstance(exc, NoRegionError):
        return SourceError(f"source {source}: no AWS region for {action}; set aws.region")
    if not isinstance(exc, ClientError):
        if isinstance(exc, OSError | ValueError):
            return SourceError(f"source {source}: {action} failed: {type(exc).__name__}: {exc}")
        return exc if isinstance(exc, Exception) else SourceError(str(exc))
    code = error_code(exc)
    if code in _DENIED or (_status(exc) == 403 and code not in _BAD_CREDENTIALS):
        return PermissionDeniedError(
            f"source {source}: AWS denied {action} ({code}); grant it to the collector's role (see {POLICY_FILE})"
        )
    if code in _BAD_CREDENTIALS:
        return PermissionDeniedError(
            f"source {source}: AWS credentials are expired or invalid ({code}) calling {action}; refresh them"
        )
    return SourceError(f"source {source}: {action} failed: {code}: {_message(exc)}")
