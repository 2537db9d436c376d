"""doctor's AWS checks: who am I, can each AWS source read its data, may the kill switch act.

The kill-switch check asks IAM itself: ``iam:SimulatePrincipalPolicy`` for the caller's role (or
user) and every action the configured rules declare. That evaluates the identity policies attached
to the principal and its permission boundary, i.e. what the daemon will actually be allowed. An
action allowed only under a condition (a resource tag, as in ``deploy/aws/killswitch-policy.json``)
comes back with the context keys it depends on: it is reported as allowed when tagged so.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from spendwatch.doctor.base import (
    DoctorContext,
    Finding,
    PermissionNeed,
    killswitch_needs,
    one_line,
    permission_findings,
)

if TYPE_CHECKING:
    from spendwatch.connections import AwsConnection

COLLECTOR_POLICY = "deploy/aws/collector-policy.json"
KILLSWITCH_POLICY = "deploy/aws/killswitch-policy.json"
AWS_SOURCE_TYPES = ("aws-cost-explorer", "aws-data-export")
_DENIED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "UnauthorizedException"}
_BAD_CREDENTIALS = {"InvalidClientTokenId", "ExpiredToken", "ExpiredTokenException", "SignatureDoesNotMatch",
                    "UnrecognizedClientException", "InvalidAccessKeyId"}  # fmt: skip
NO_CREDENTIALS_FIX = (
    "give the daemon an identity: EC2 instance profile, EKS IRSA (ServiceAccount annotation "
    "eks.amazonaws.com/role-arn) or Pod Identity, or AWS_PROFILE / AWS_* variables elsewhere"
)
SIMULATE_BATCH = 100


class AwsCheckError(Exception):
    """A check could not be made; ``fix`` says what to do."""

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.fix = fix


# -- connections and identity ----------------------------------------------------------------------


def _key(connection: AwsConnection) -> str:
    return connection.model_dump_json()


def connections_in_use(ctx: DoctorContext, *, killswitch: bool) -> dict[str, tuple[AwsConnection, list[str]]]:
    """Distinct AWS connections → (connection, who uses it)."""
    found: dict[str, tuple[AwsConnection, list[str]]] = {}

    def add(connection: AwsConnection, user: str) -> None:
        found.setdefault(_key(connection), (connection, []))[1].append(user)

    for source in _sources(ctx):
        if source.enabled and source.type in AWS_SOURCE_TYPES:
            add(source.aws, f"source {source.name}")
    if killswitch:
        settings = ctx.config.killswitch
        add(settings.aws, "killswitch")
        for account, connection in settings.aws_accounts.items():
            add(connection, f"killswitch (account {account})")
    return found


def session_for(connection: AwsConnection, ctx: DoctorContext) -> Any:
    """A boto3 session (the role assumed if ``role_arn``), cached per connection; AwsCheckError if not."""
    key = "aws-session:" + _key(connection)
    if key not in ctx.cache:
        from spendwatch.connections import aws_session

        try:
            ctx.cache[key] = aws_session(_quick(connection), base=ctx.clients.get("aws_session"))
        except Exception as exc:
            ctx.cache[key] = _as_check_error(exc, connection, "sts:AssumeRole")
    value = ctx.cache[key]
    if isinstance(value, AwsCheckError):
        raise value
    return value


def client_for(connection: AwsConnection, ctx: DoctorContext, service: str, region: str | None = None) -> Any:
    from spendwatch.connections import aws_client

    return aws_client(_quick(connection), service, session=session_for(connection, ctx), region=region)


def _quick(connection: AwsConnection) -> AwsConnection:
    # doctor answers in seconds: a wrong endpoint or missing credentials is not worth 8 retries.
    return connection.model_copy(update={"max_attempts": min(connection.max_attempts, 2)})


def identity(connection: AwsConnection, ctx: DoctorContext) -> dict[str, str]:
    key = "aws-identity:" + _key(connection)
    if key not in ctx.cache:
        try:
            answer = client_for(connection, ctx, "sts").get_caller_identity()
            ctx.cache[key] = {"arn": answer["Arn"], "account": answer["Account"]}
        except AwsCheckError as exc:
            ctx.cache[key] = exc
        except Exception as exc:
            ctx.cache[key] = _as_check_error(exc, connection, "sts:GetCallerIdentity")
    value = ctx.cache[key]
    if isinstance(value, AwsCheckError):
        raise value
    return dict(value)


def _as_check_error(exc: Exception, connection: AwsConnection, permission: str) -> AwsCheckError:
    from botocore import exceptions as bexc

    if isinstance(exc, AwsCheckError):
        return exc
    if isinstance(exc, (bexc.NoCredentialsError, bexc.PartialCredentialsError)):
        return AwsCheckError("no AWS credentials found", NO_CREDENTIALS_FIX)
    if isinstance(exc, bexc.ProfileNotFound):
        return AwsCheckError(
            f"profile {connection.profile!r} is not in the AWS config", "fix aws.profile or ~/.aws/config"
        )
    if isinstance(exc, (bexc.EndpointConnectionError, bexc.ConnectTimeoutError, bexc.ReadTimeoutError)):
        where = connection.endpoint_url or "the AWS endpoint"
        return AwsCheckError(
            f"cannot reach {where}: {one_line(exc)}", "check DNS and egress to port 443 (proxy, NetworkPolicy)"
        )
    if isinstance(exc, bexc.ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        if code in _BAD_CREDENTIALS:
            return AwsCheckError(f"AWS rejected the credentials ({code})", NO_CREDENTIALS_FIX)
        if code in _DENIED and permission == "sts:AssumeRole":
            return AwsCheckError(
                f"cannot assume {connection.role_arn} ({code})",
                "the role's trust policy must trust the caller, and the caller needs sts:AssumeRole on "
                + str(connection.role_arn)
                + (" with the configured external_id" if connection.external_id else ""),
            )
        if code in _DENIED:
            return AwsCheckError(f"denied: needs {permission} ({code})")
        return AwsCheckError(f"{code}: {exc.response.get('Error', {}).get('Message', '')}".rstrip(": "))
    return AwsCheckError(one_line(exc))


def check_credentials(ctx: DoctorContext) -> list[Finding]:
    aws_rules = any(n.provider == "aws" for n in _needs(ctx))
    findings = []
    for connection, users in connections_in_use(ctx, killswitch=aws_rules).values():
        subject = "aws identity" + (f" via {connection.role_arn}" if connection.role_arn else "")
        used_by = ", ".join(users)
        try:
            who = identity(connection, ctx)
        except AwsCheckError as exc:
            findings.append(Finding("credentials", subject, "fail", f"{exc} (used by {used_by})", fix=exc.fix))
            continue
        findings.append(
            Finding("credentials", subject, "ok", f"{who['arn']} in account {who['account']} (used by {used_by})")
        )
    return findings


def _needs(ctx: DoctorContext) -> list[PermissionNeed]:
    key = "needs"
    if key not in ctx.cache:
        ctx.cache[key] = killswitch_needs(ctx.config)
    needs: list[PermissionNeed] = ctx.cache[key]
    return needs


# -- sources ---------------------------------------------------------------------------------------


def _denied_fix(permission: str, sid: str) -> str:
    return f"grant {permission} to the collector role: {COLLECTOR_POLICY} (statement {sid})"


def _failure(subject: str, exc: Exception, permission: str, sid: str) -> Finding:
    """A probe call's exception as a finding that names the permission to grant."""
    from botocore import exceptions as bexc

    if isinstance(exc, bexc.ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        message = exc.response.get("Error", {}).get("Message", "")
        if code in _DENIED:
            return Finding("source", subject, "fail", f"denied: needs {permission}", fix=_denied_fix(permission, sid))
        return Finding("source", subject, "fail", f"{code}: {message}".rstrip(": "))
    error = _as_check_error(exc, _NO_CONNECTION, permission)
    return Finding("source", subject, "fail", str(error), fix=error.fix)


def _call(subject: str, permission: str, sid: str, call: Any) -> tuple[Any, Finding | None]:
    try:
        return call(), None
    except Exception as exc:
        return None, _failure(subject, exc, permission, sid)


def probe_cost_explorer(source: Any, ctx: DoctorContext) -> Iterator[Finding]:
    from botocore import exceptions as bexc

    subject = f"{source.name} ({source.type})"
    day = ctx.clock.now().date()
    period = {"Start": (day - timedelta(days=2)).isoformat(), "End": (day - timedelta(days=1)).isoformat()}
    try:
        ce = client_for(source.aws, ctx, "ce", region="us-east-1")
        answer = ce.get_cost_and_usage(TimePeriod=period, Granularity="DAILY", Metrics=["UnblendedCost"])
    except AwsCheckError as exc:
        yield Finding("source", subject, "fail", str(exc), fix=exc.fix)
        return
    except bexc.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "DataUnavailableException":
            yield Finding(
                "source", subject, "fail", "Cost Explorer has no data for this account yet",
                fix="open Cost Explorer once in the management (payer) account's console; data appears within 24 h",
            )  # fmt: skip
        else:
            yield _failure(subject, exc, "ce:GetCostAndUsage", "CostExplorerRead")
        return
    except Exception as exc:
        yield _failure(subject, exc, "ce:GetCostAndUsage", "CostExplorerRead")
        return
    days = len(answer.get("ResultsByTime", []))
    yield Finding(
        "source", subject, "ok", f"Cost Explorer answered for {period['Start']} ({days} day(s); a $0.01 request)"
    )


def probe_data_export(source: Any, ctx: DoctorContext) -> Iterator[Finding]:
    subject = f"{source.name} ({source.type})"
    try:
        s3 = client_for(source.aws, ctx, "s3")
    except AwsCheckError as exc:
        yield Finding("source", subject, "fail", str(exc), fix=exc.fix)
        return
    prefix = f"{source.prefix}/" if source.prefix else ""
    where = f"s3://{source.bucket}/{prefix}"
    listing, finding = _call(
        subject, f"s3:ListBucket on arn:aws:s3:::{source.bucket}", "DataExportsList",
        lambda: s3.list_objects_v2(Bucket=source.bucket, Prefix=prefix, MaxKeys=1000),
    )  # fmt: skip
    if finding:
        yield finding
    else:
        keys = [item["Key"] for item in listing.get("Contents", [])]
        manifests = [k for k in keys if k.endswith("Manifest.json")]
        if manifests:
            yield Finding(
                "source", subject, "ok", f"{where}: export manifests found ({len(manifests)} in the first page)"
            )
        elif keys:
            yield Finding(
                "source", subject, "warn", f"{where}: {len(keys)} object(s) but no *-Manifest.json yet",
                fix="check prefix: it must be '<S3 prefix>/<export name>' of the Data Export",
            )  # fmt: skip
        else:
            yield Finding(
                "source", subject, "warn", f"{where}: empty",
                fix="a new Data Export delivers its first files within 24 h; else check bucket and prefix",
            )  # fmt: skip
    if source.athena is not None:
        yield from _probe_athena(source, ctx, subject)


def _probe_athena(source: Any, ctx: DoctorContext, subject: str) -> Iterator[Finding]:
    athena_config = source.athena
    region = source.aws.region
    athena = client_for(source.aws, ctx, "athena", region=region)
    glue = client_for(source.aws, ctx, "glue", region=region)
    group, finding = _call(
        subject, "athena:GetWorkGroup", "AthenaPushdownQuery",
        lambda: athena.get_work_group(WorkGroup=athena_config.workgroup),
    )  # fmt: skip
    if finding:
        yield finding
    else:
        cutoff = group["WorkGroup"].get("Configuration", {}).get("BytesScannedCutoffPerQuery")
        state = group["WorkGroup"].get("State", "ENABLED")
        if state != "ENABLED":
            yield Finding("source", subject, "fail", f"Athena workgroup {athena_config.workgroup} is {state}")
        elif cutoff is None:
            yield Finding(
                "source", subject, "warn", f"Athena workgroup {athena_config.workgroup} has no bytes-scanned cutoff",
                fix=f"aws athena update-work-group --work-group {athena_config.workgroup} --configuration-updates "
                "BytesScannedCutoffPerQuery=107374182400",
            )  # fmt: skip
        else:
            yield Finding(
                "source", subject, "ok", f"Athena workgroup {athena_config.workgroup} (cutoff {cutoff} bytes)"
            )
    table, finding = _call(
        subject, "glue:GetTable", "AthenaPushdownCatalog",
        lambda: glue.get_table(DatabaseName=athena_config.database, Name=athena_config.table),
    )  # fmt: skip
    if finding:
        yield finding
    else:
        yield Finding("source", subject, "ok", f"Glue table {athena_config.database}.{table['Table']['Name']} found")


SOURCE_PROBES = {"aws-cost-explorer": probe_cost_explorer, "aws-data-export": probe_data_export}


# -- the kill switch -------------------------------------------------------------------------------


def principal_arn(caller_arn: str, iam: Any) -> str:
    """The IAM principal to simulate: the role behind an assumed-role session, or the user."""
    parts = caller_arn.split(":", 5)
    if len(parts) != 6:
        raise AwsCheckError(f"unexpected caller ARN {caller_arn!r}")
    partition, service, account, resource = parts[1], parts[2], parts[4], parts[5]
    if service == "sts" and resource.startswith("assumed-role/"):
        role_name = resource.split("/")[1]
        try:
            return str(iam.get_role(RoleName=role_name)["Role"]["Arn"])  # the real ARN, with its path
        except Exception:
            return f"arn:{partition}:iam::{account}:role/{role_name}"
    if service == "iam" and resource == "root":
        raise AwsCheckError(
            "running as the account root user: everything is allowed, nothing can be checked",
            "run spendwatch with a role holding only deploy/aws/*-policy.json, never as root",
        )
    if service == "iam" and resource.startswith("user/"):
        return caller_arn
    raise AwsCheckError(f"cannot simulate the policies of {caller_arn} (not an IAM role or user)")


def simulate(iam: Any, principal: str, actions: list[str]) -> dict[str, dict[str, Any]]:
    """Action → its evaluation result (``EvalDecision``, ``MissingContextValues`` …)."""
    results: dict[str, dict[str, Any]] = {}
    for start in range(0, len(actions), SIMULATE_BATCH):
        params: dict[str, Any] = {"PolicySourceArn": principal, "ActionNames": actions[start : start + SIMULATE_BATCH]}
        while True:
            answer = iam.simulate_principal_policy(**params)
            for result in answer.get("EvaluationResults", []):
                results[result["EvalActionName"].lower()] = result
            if not answer.get("IsTruncated"):
                break
            params["Marker"] = answer["Marker"]
    return results


def check_killswitch(ctx: DoctorContext, needs: list[PermissionNeed]) -> list[Finding]:
    if not needs:
        return []
    settings = ctx.config.killswitch
    targets: list[tuple[str, AwsConnection]] = [("aws", settings.aws)]
    targets += [(f"aws account {account}", connection) for account, connection in settings.aws_accounts.items()]
    findings: list[Finding] = []
    for label, connection in targets:
        findings += _check_connection(ctx, label, connection, needs)
    return findings


def _check_connection(
    ctx: DoctorContext, label: str, connection: AwsConnection, needs: list[PermissionNeed]
) -> list[Finding]:
    from botocore import exceptions as bexc

    subject = f"{label} kill-switch permissions"
    try:
        caller = identity(connection, ctx)["arn"]
        iam = client_for(connection, ctx, "iam")
        principal = principal_arn(caller, iam)
        results = simulate(iam, principal, sorted({n.permission for n in needs}))
    except AwsCheckError as exc:
        return [Finding("killswitch", subject, "fail", f"cannot check: {exc}", fix=exc.fix)]
    except bexc.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        return [
            Finding(
                "killswitch", subject, "warn", f"cannot simulate the policies ({code})",
                fix="let the role simulate itself: iam:SimulatePrincipalPolicy on its own ARN "
                f"(see {KILLSWITCH_POLICY}), or run doctor once with an admin profile",
            )
        ]  # fmt: skip
    missing: list[PermissionNeed] = []
    conditional: list[str] = []
    for need in needs:
        result = results.get(need.permission.lower())
        if result is None or result.get("EvalDecision") != "allowed":
            if result is not None and result.get("MissingContextValues"):
                conditional.append(f"{need.permission} (when {', '.join(sorted(result['MissingContextValues']))})")
                continue
            missing.append(need)
    fix = f"attach {KILLSWITCH_POLICY} to {principal} (aws iam put-role-policy, docs/deploy.md)"
    findings = permission_findings(f"{subject} of {principal}", missing, fix)
    allowed = len(needs) - len(missing) - len(conditional)
    message = f"{allowed} of {len(needs)} permission(s) allowed"
    if conditional:
        message += "; allowed only on tagged resources: " + ", ".join(conditional)
    if not missing:
        findings.append(Finding("killswitch", f"{subject} of {principal}", "ok", message))
    return findings


class _NoConnection:
    role_arn = None
    external_id = None
    profile = None
    endpoint_url = None


_NO_CONNECTION: Any = _NoConnection()


def _sources(ctx: DoctorContext) -> list[Any]:
    """The configured sources, typed loosely: each type has its own connection fields."""
    return list(ctx.config.sources)
