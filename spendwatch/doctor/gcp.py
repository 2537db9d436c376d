"""doctor's Google Cloud checks: whose credentials, can each GCP source read, may the kill switch act.

Permissions are checked the way Google recommends for "can I?": ``testIamPermissions`` on the
resource (``projects/P`` through Cloud Resource Manager, ``billingAccounts/A`` through Cloud
Billing), which answers with the subset of the asked permissions the caller holds there — role
bindings on the project, its folders and organization included. Projects to test come from the
command line (``--gcp-project``), the config (job rules' ``accounts``, gcp-jobs ``projects``, the
connection's project) and the projects a gcp-billing-accounts source saw (the store).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
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
    from spendwatch.connections import GcpConnection

GCP_SOURCE_TYPES = ("gcp-billing-export", "gcp-billing-accounts", "gcp-jobs")
COLLECTOR_ROLE = "deploy/gcp/collector-role.yaml"
KILLSWITCH_ROLE = "deploy/gcp/killswitch-role.yaml"
RESOURCE_MANAGER = "https://cloudresourcemanager.googleapis.com"
CLOUD_BILLING = "https://cloudbilling.googleapis.com"
MAX_PROJECTS = 25  # doctor answers in seconds; beyond this, name the projects with --gcp-project
TEST_BATCH = 100  # testIamPermissions takes at most 100 permissions per call
NO_CREDENTIALS_FIX = (
    "give the daemon an identity: a GCE VM's service account, GKE Workload Identity (ServiceAccount "
    "annotation iam.gke.io/gcp-service-account), or `gcloud auth application-default login` elsewhere"
)
_GLOB = set("*?[")


class GcpCheckError(Exception):
    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.fix = fix


# -- credentials ---------------------------------------------------------------------------------------


def _key(connection: GcpConnection) -> str:
    return connection.model_dump_json()


def connections_in_use(ctx: DoctorContext, *, killswitch: bool) -> dict[str, tuple[GcpConnection, list[str]]]:
    found: dict[str, tuple[GcpConnection, list[str]]] = {}
    for source in _sources(ctx):
        if source.enabled and source.type in GCP_SOURCE_TYPES:
            found.setdefault(_key(source.gcp), (source.gcp, []))[1].append(f"source {source.name}")
    if killswitch:
        connection = ctx.config.killswitch.gcp
        found.setdefault(_key(connection), (connection, []))[1].append("killswitch")
    return found


def credentials_for(connection: GcpConnection, ctx: DoctorContext) -> Any:
    """Credentials for ``connection``, refreshed once (so a bad identity shows here); GcpCheckError if none."""
    key = "gcp-credentials:" + _key(connection)
    if key not in ctx.cache:
        try:
            ctx.cache[key] = _credentials(connection, ctx)
        except GcpCheckError as exc:
            ctx.cache[key] = exc
    value = ctx.cache[key]
    if isinstance(value, GcpCheckError):
        raise value
    return value


def _credentials(connection: GcpConnection, ctx: DoctorContext) -> Any:
    import google.auth.exceptions as gauth

    injected = ctx.clients.get("gcp_credentials")
    if injected is not None:
        return injected
    from spendwatch.connections import gcp_credentials

    try:
        credentials = gcp_credentials(connection)
    except gauth.DefaultCredentialsError as exc:
        raise GcpCheckError(f"no Google credentials found ({one_line(exc)[:160]})", NO_CREDENTIALS_FIX) from None
    except (OSError, ValueError) as exc:
        raise GcpCheckError(
            f"cannot load credentials_file {connection.credentials_file}: {one_line(exc)}",
            "point gcp.credentials_file at a service-account key JSON (or drop it and use workload identity)",
        ) from None
    if connection.anonymous:
        return credentials
    from google.auth.transport.requests import Request

    try:
        credentials.refresh(Request())
    except gauth.GoogleAuthError as exc:
        raise GcpCheckError(
            f"Google rejected the credentials: {one_line(exc)[:300]}", _refresh_fix(connection)
        ) from None
    return credentials


def _refresh_fix(connection: GcpConnection) -> str:
    if connection.impersonate_service_account:
        return f"the caller needs roles/iam.serviceAccountTokenCreator on {connection.impersonate_service_account}"
    return (
        "on GKE, bind the Kubernetes service account: gcloud iam service-accounts add-iam-policy-binding GSA "
        "--role roles/iam.workloadIdentityUser --member 'serviceAccount:PROJECT.svc.id.goog[spendwatch/spendwatch]'; "
        "elsewhere check the key file or run `gcloud auth application-default login`"
    )


def principal(credentials: Any) -> str:
    """The member name IAM knows the caller by, as best the credentials tell."""
    email = getattr(credentials, "service_account_email", None) or getattr(credentials, "signer_email", None)
    if email and email != "default":
        return f"serviceAccount:{email}"
    if type(credentials).__name__ == "AnonymousCredentials":
        return "anonymous (emulator/test)"
    return f"{type(credentials).__name__} credentials (user or external account)"


def check_credentials(ctx: DoctorContext) -> list[Finding]:
    gcp_rules = any(n.provider == "gcp" for n in _needs(ctx))
    findings = []
    for connection, users in connections_in_use(ctx, killswitch=gcp_rules).values():
        subject = "gcp identity" + (
            f" as {connection.impersonate_service_account}" if connection.impersonate_service_account else ""
        )
        used_by = ", ".join(users)
        try:
            credentials = credentials_for(connection, ctx)
        except GcpCheckError as exc:
            findings.append(Finding("credentials", subject, "fail", f"{exc} (used by {used_by})", fix=exc.fix))
            continue
        findings.append(Finding("credentials", subject, "ok", f"{principal(credentials)} (used by {used_by})"))
    return findings


def _needs(ctx: DoctorContext) -> list[PermissionNeed]:
    if "needs" not in ctx.cache:
        ctx.cache["needs"] = killswitch_needs(ctx.config)
    needs: list[PermissionNeed] = ctx.cache["needs"]
    return needs


# -- testIamPermissions --------------------------------------------------------------------------------


def test_permissions(
    ctx: DoctorContext, connection: GcpConnection, resource: str, permissions: Iterable[str]
) -> set[str]:
    """The subset of ``permissions`` the caller holds on ``resource`` (``projects/P`` or ``billingAccounts/A``)."""
    wanted = sorted(set(permissions))
    if resource.startswith("billingAccounts/"):
        base = connection.endpoints.get("cloudbilling", CLOUD_BILLING)
    else:
        base = connection.endpoints.get("cloudresourcemanager", RESOURCE_MANAGER)
    session = _http(ctx, connection)
    granted: set[str] = set()
    for start in range(0, len(wanted), TEST_BATCH):
        url = f"{base.rstrip('/')}/v1/{resource}:testIamPermissions"
        try:
            response = session.post(url, json={"permissions": wanted[start : start + TEST_BATCH]}, timeout=30)
        except Exception as exc:
            raise GcpCheckError(f"cannot reach {base}: {one_line(exc)}", "check DNS and egress to port 443") from None
        if response.status_code != 200:
            raise GcpCheckError(_api_error(response, resource), _api_fix(response.status_code, resource))
        granted |= set(response.json().get("permissions") or [])
    return granted


def _http(ctx: DoctorContext, connection: GcpConnection) -> Any:
    injected = ctx.clients.get("gcp_http")
    if injected is not None:
        return injected
    from google.auth.transport.requests import AuthorizedSession

    return AuthorizedSession(credentials_for(connection, ctx))


def _api_error(response: Any, resource: str) -> str:
    try:
        message = response.json()["error"]["message"]
    except Exception:
        message = response.text[:200]
    return f"testIamPermissions on {resource}: HTTP {response.status_code}: {message}"


def _api_fix(status: int, resource: str) -> str | None:
    if status == 403:
        return f"the caller cannot see {resource} at all: grant it a role there (or check the id)"
    if status == 404:
        return f"{resource} does not exist (check the id)"
    return None


# -- sources ---------------------------------------------------------------------------------------


def probe_billing_export(source: Any, ctx: DoctorContext) -> Iterator[Finding]:
    from google.api_core import exceptions as gexc

    subject = f"{source.name} ({source.type})"
    table_project = source.table.split(".")[0]
    job_project = source.gcp.project or table_project
    try:
        client = _bigquery(source, ctx, job_project)
        table = client.get_table(source.table)
    except GcpCheckError as exc:
        yield Finding("source", subject, "fail", str(exc), fix=exc.fix)
        return
    except gexc.NotFound:
        yield Finding(
            "source", subject, "fail", f"BigQuery table {source.table} not found",
            fix="Billing → Billing export names the dataset; the table appears with the first export (within a day)",
        )  # fmt: skip
        return
    except (gexc.Forbidden, gexc.Unauthorized) as exc:
        yield Finding(
            "source", subject, "fail", f"denied: needs bigquery.tables.get on {source.table} ({one_line(exc)[:120]})",
            fix=f"grant {COLLECTOR_ROLE} (or roles/bigquery.dataViewer) on the export dataset",
        )  # fmt: skip
        return
    except Exception as exc:
        yield Finding("source", subject, "fail", f"BigQuery: {one_line(exc)[:300]}")
        return
    rows = getattr(table, "num_rows", None)
    yield Finding(
        "source", subject, "ok", f"export table {source.table} found ({rows if rows is not None else '?'} rows)"
    )
    yield from _project_permissions(ctx, source.gcp, subject, job_project, ["bigquery.jobs.create"], "source")


def _bigquery(source: Any, ctx: DoctorContext, project: str) -> Any:
    injected = ctx.clients.get("bigquery_client")
    if injected is not None:
        return injected
    from google.cloud import bigquery

    from spendwatch.connections import gcp_client_options

    return bigquery.Client(
        project=project,
        credentials=credentials_for(source.gcp, ctx),
        client_options=gcp_client_options(source.gcp, "bigquery") or None,
        location=source.location,
    )


def probe_billing_accounts(source: Any, ctx: DoctorContext) -> Iterator[Finding]:
    subject = f"{source.name} ({source.type})"
    try:
        client = _billing(source.gcp, ctx)
        accounts = [
            a.name.removeprefix("billingAccounts/") for a in client.list_billing_accounts(request={"page_size": 50})
        ]
    except GcpCheckError as exc:
        yield Finding("source", subject, "fail", str(exc), fix=exc.fix)
        return
    except Exception as exc:
        yield Finding(
            "source", subject, "fail", f"cannot list billing accounts: {one_line(exc)[:200]}",
            fix="grant roles/billing.viewer on the billing account(s) (billing.accounts.list, "
            "billing.resourceAssociations.list)",
        )  # fmt: skip
        return
    if not accounts:
        yield Finding(
            "source", subject, "fail", "no billing account is visible to this identity",
            fix="grant roles/billing.viewer on the billing account (Billing → Account management → Permissions)",
        )  # fmt: skip
        return
    unseen = [a for a in source.billing_accounts if a not in accounts]
    if unseen:
        yield Finding(
            "source", subject, "fail",
            f"billing account(s) {', '.join(unseen)} not visible (seen: {', '.join(accounts)})",
            fix="grant roles/billing.viewer on them, or fix billing_accounts",
        )  # fmt: skip
    else:
        yield Finding("source", subject, "ok", f"{len(accounts)} billing account(s) visible: {', '.join(accounts[:5])}")


def _billing(connection: GcpConnection, ctx: DoctorContext) -> Any:
    injected = ctx.clients.get("cloud_billing_client")
    if injected is not None:
        return injected
    from google.cloud import billing_v1

    from spendwatch.connections import gcp_client_options

    return billing_v1.CloudBillingClient(
        credentials=credentials_for(connection, ctx),
        transport="rest",
        client_options=gcp_client_options(connection, "cloudbilling") or None,
    )


def probe_jobs(source: Any, ctx: DoctorContext) -> Iterator[Finding]:
    from spendwatch.collectors.gcp.common import PERMISSIONS

    subject = f"{source.name} ({source.type})"
    projects = list(source.projects) or list(ctx.store_projects)
    if not projects:
        yield Finding(
            "source", subject, "fail", "no projects to read",
            fix="list them under 'projects:' or run a gcp-billing-accounts source first (spendwatch collect)",
        )  # fmt: skip
        return
    wanted: list[str] = []
    if source.bigquery.enabled:
        wanted += PERMISSIONS["bigquery.jobs.list.all_users"]
    if source.vertex.enabled:
        wanted += PERMISSIONS["aiplatform.customJobs.list"]
    if source.dataproc.enabled and source.dataproc.clusters:
        wanted += PERMISSIONS["dataproc.clusters.list"]
    if source.dataproc.enabled and source.dataproc.batches:
        wanted += PERMISSIONS["dataproc.batches.list"]
    for project in projects[:MAX_PROJECTS]:
        yield from _project_permissions(ctx, source.gcp, subject, project, wanted, "source")
    if len(projects) > MAX_PROJECTS:
        yield Finding("source", subject, "skip", f"{len(projects) - MAX_PROJECTS} more project(s) not tested")


def _project_permissions(
    ctx: DoctorContext, connection: GcpConnection, subject: str, project: str, wanted: list[str], check: str
) -> Iterator[Finding]:
    if not wanted:
        return
    try:
        granted = test_permissions(ctx, connection, f"projects/{project}", wanted)
    except GcpCheckError as exc:
        yield Finding(check, subject, "fail", str(exc), fix=exc.fix)
        return
    missing = sorted(set(wanted) - granted)
    if missing:
        yield Finding(
            check, subject, "fail", f"project {project}: missing {', '.join(missing)}",
            fix=f"grant the role in {COLLECTOR_ROLE} on project {project} (docs/deploy.md, GCP roles)",
        )  # fmt: skip
    else:
        yield Finding(check, subject, "ok", f"project {project}: {', '.join(sorted(set(wanted)))} granted")


SOURCE_PROBES = {
    "gcp-billing-export": probe_billing_export,
    "gcp-billing-accounts": probe_billing_accounts,
    "gcp-jobs": probe_jobs,
}


# -- the kill switch -------------------------------------------------------------------------------


def killswitch_scopes(ctx: DoctorContext) -> tuple[list[str], list[str]]:
    """(projects, billing accounts) the GCP rules may act in, as far as they can be known."""
    config = ctx.config
    projects: list[str] = list(ctx.gcp_projects)
    for rule in config.killswitch.rules:
        if rule.enabled and rule.when.job is not None:
            projects += [a for a in rule.when.job.accounts if not (_GLOB & set(a)) and not a.isdigit()]
    if config.killswitch.gcp.project:
        projects.append(config.killswitch.gcp.project)
    for source in _sources(ctx):
        if source.enabled and source.type == "gcp-jobs":
            projects += list(source.projects)
    projects += list(ctx.store_projects)
    accounts: list[str] = list(ctx.gcp_billing_accounts)
    for source in _sources(ctx):
        if source.enabled and source.type == "gcp-billing-accounts":
            accounts += list(source.billing_accounts)
    accounts += list(ctx.store_billing_accounts)
    return list(dict.fromkeys(projects)), list(dict.fromkeys(accounts))


def check_killswitch(ctx: DoctorContext, needs: list[PermissionNeed]) -> list[Finding]:
    if not needs:
        return []
    connection = ctx.config.killswitch.gcp
    try:
        who = principal(credentials_for(connection, ctx))
    except GcpCheckError as exc:
        return [Finding("killswitch", "gcp kill-switch permissions", "fail", f"cannot check: {exc}", fix=exc.fix)]
    projects, accounts = killswitch_scopes(ctx)
    on_accounts = [n for n in needs if n.permission.startswith("billing.")]
    on_projects = [n for n in needs if not n.permission.startswith("billing.")]
    findings: list[Finding] = []
    findings += _scopes(ctx, connection, who, "project", projects, on_projects, "--gcp-project PROJECT")
    findings += _scopes(ctx, connection, who, "billing account", accounts, on_accounts, "--gcp-billing-account ID")
    return findings


def _scopes(
    ctx: DoctorContext,
    connection: GcpConnection,
    who: str,
    kind: str,
    scopes: list[str],
    needs: list[PermissionNeed],
    option: str,
) -> list[Finding]:
    if not needs:
        return []
    if not scopes:
        return [
            Finding(
                "killswitch", f"gcp kill-switch permissions ({kind})", "warn",
                f"no {kind} known to test {', '.join(sorted({n.permission for n in needs}))} on",
                fix=f"name one: spendwatch doctor {option} (repeatable)",
            )
        ]  # fmt: skip
    findings: list[Finding] = []
    prefix = "projects" if kind == "project" else "billingAccounts"
    for scope in scopes[:MAX_PROJECTS]:
        subject = f"gcp {kind} {scope} kill-switch permissions of {who}"
        try:
            granted = test_permissions(ctx, connection, f"{prefix}/{scope}", [n.permission for n in needs])
        except GcpCheckError as exc:
            findings.append(Finding("killswitch", subject, "fail", f"cannot check: {exc}", fix=exc.fix))
            continue
        missing = [n for n in needs if n.permission not in granted]
        fix = (
            f"grant the custom role from {KILLSWITCH_ROLE} on {kind} {scope} (docs/deploy.md: "
            f"gcloud iam roles create … --file {KILLSWITCH_ROLE}; gcloud … add-iam-policy-binding)"
        )
        findings += permission_findings(subject, missing, fix)
        if not missing:
            findings.append(Finding("killswitch", subject, "ok", f"all {len(needs)} permission(s) granted"))
    if len(scopes) > MAX_PROJECTS:
        findings.append(
            Finding("killswitch", f"gcp kill-switch permissions ({kind})", "skip",
                    f"{len(scopes) - MAX_PROJECTS} more {kind}(s) not tested; name them with {option}")
        )  # fmt: skip
    return findings


def _sources(ctx: DoctorContext) -> list[Any]:
    """The configured sources, typed loosely: each type has its own connection fields."""
    return list(ctx.config.sources)
