"""spendwatch doctor on Google Cloud: the real client libraries against the fake Google API server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from spendwatch.config import parse_config
from spendwatch.doctor import DoctorReport, Finding, run_doctor
from tests.doubles.google import GoogleApiServer
from tests.doubles.google_bigquery import FakeBigQuery
from tests.doubles.google_doctor import FakeIamPermissions, service_account_key

TABLE = "billing-proj.billing.gcp_billing_export_resource_v1_0A1B2C_3D4E5F_6A7B8C"
ACCOUNT = "0A1B2C-3D4E5F-6A7B8C"


@pytest.fixture
def fakes(google_api: GoogleApiServer) -> tuple[FakeIamPermissions, FakeBigQuery]:
    return FakeIamPermissions(google_api), FakeBigQuery(google_api)


def _gcp(endpoint: str, **extra: Any) -> dict[str, Any]:
    apis = {"bigquery": endpoint, "cloudbilling": endpoint, "cloudresourcemanager": endpoint}
    return {"anonymous": True, "project": "billing-proj", "endpoints": apis, **extra}


def _config(
    tmp_path: Path, endpoint: str, sources: list[dict[str, Any]], killswitch: dict[str, Any] | None = None
) -> Any:
    for source in sources:
        if source["type"].startswith("gcp-"):
            source.setdefault("gcp", _gcp(endpoint))
    data: dict[str, Any] = {"store": {"path": str(tmp_path / "sw.duckdb")}, "sources": sources}
    if killswitch is not None:
        data["killswitch"] = {"gcp": _gcp(endpoint, project=None), "approvers": ["lead"], **killswitch}
    path = tmp_path / "spendwatch.yaml"
    path.write_text(yaml.safe_dump(data))
    return parse_config(path.read_text(), path, environ={})


def _by(report: DoctorReport, check: str) -> list[Finding]:
    return [f for f in report.findings if f.check == check]


EXPORT = {"name": "gcp-billing", "type": "gcp-billing-export", "table": TABLE}


def test_billing_export_table_and_query_permission(
    tmp_path: Path,
    google_api: GoogleApiServer,
    fakes: Any,
    clock: Any,
) -> None:
    iam, bq = fakes
    bq.add_table(TABLE, schema=[{"name": "cost", "type": "FLOAT"}])
    iam.grant("projects/billing-proj", "bigquery.jobs.create")
    report = run_doctor(_config(tmp_path, google_api.endpoint, [dict(EXPORT)]), clock)
    [identity] = _by(report, "credentials")
    assert identity.status == "ok" and "source gcp-billing" in identity.message
    sources = _by(report, "source")
    assert [f.status for f in sources] == ["ok", "ok"], sources
    assert f"export table {TABLE} found" in sources[0].message
    assert "project billing-proj: bigquery.jobs.create granted" in sources[1].message
    assert iam.tested("projects/billing-proj") == [["bigquery.jobs.create"]]
    assert report.ok


def test_a_missing_export_table_and_query_permission_fail(
    tmp_path: Path,
    google_api: GoogleApiServer,
    fakes: Any,
    clock: Any,
) -> None:
    report = run_doctor(_config(tmp_path, google_api.endpoint, [dict(EXPORT)]), clock)
    [source] = _by(report, "source")
    assert source.status == "fail"
    assert "not found" in source.message
    assert source.fix is not None and "Billing export" in source.fix
    iam, bq = fakes
    bq.add_table(TABLE, schema=[{"name": "cost", "type": "FLOAT"}])
    iam.grant("projects/billing-proj")  # the project exists, nothing granted
    report = run_doctor(_config(tmp_path, google_api.endpoint, [dict(EXPORT)]), clock)
    failing = [f for f in _by(report, "source") if f.status == "fail"]
    assert [f.message for f in failing] == ["project billing-proj: missing bigquery.jobs.create"]
    assert failing[0].fix is not None and "deploy/gcp/collector-role.yaml" in failing[0].fix


def test_billing_accounts_visible_or_not(
    tmp_path: Path,
    google_api: GoogleApiServer,
    fakes: Any,
    clock: Any,
) -> None:
    iam, _ = fakes
    source = {"name": "accounts", "type": "gcp-billing-accounts", "billing_accounts": [ACCOUNT]}
    report = run_doctor(_config(tmp_path, google_api.endpoint, [dict(source)]), clock)
    [finding] = _by(report, "source")
    assert finding.status == "fail"
    assert "no billing account is visible" in finding.message
    iam.add_billing_account("0FFFFF-000000-111111")
    report = run_doctor(_config(tmp_path, google_api.endpoint, [dict(source)]), clock)
    [finding] = _by(report, "source")
    assert finding.status == "fail"
    assert f"{ACCOUNT} not visible" in finding.message
    iam.add_billing_account(ACCOUNT)
    report = run_doctor(_config(tmp_path, google_api.endpoint, [dict(source)]), clock)
    [finding] = _by(report, "source")
    assert finding.status == "ok"
    assert "2 billing account(s) visible" in finding.message


def test_job_source_permissions_per_project(
    tmp_path: Path,
    google_api: GoogleApiServer,
    fakes: Any,
    clock: Any,
) -> None:
    iam, _ = fakes
    iam.grant("projects/ml-proj-a", "bigquery.jobs.listAll", "aiplatform.customJobs.list")
    iam.grant("projects/ml-proj-b", "bigquery.jobs.listAll", "aiplatform.customJobs.list", "dataproc.clusters.list",
              "dataproc.batches.list")  # fmt: skip
    source = {"name": "jobs", "type": "gcp-jobs", "projects": ["ml-proj-a", "ml-proj-b", "ml-proj-gone"]}
    report = run_doctor(_config(tmp_path, google_api.endpoint, [source]), clock)
    by_project = {f.message.split(":")[0]: f for f in _by(report, "source")}
    assert by_project["project ml-proj-a"].status == "fail"
    assert "missing dataproc.batches.list, dataproc.clusters.list" in by_project["project ml-proj-a"].message
    assert by_project["project ml-proj-b"].status == "ok"
    gone = next(f for f in _by(report, "source") if "ml-proj-gone" in f.message)
    assert gone.status == "fail" and "HTTP 403" in gone.message


def test_job_source_without_projects_says_where_they_come_from(
    tmp_path: Path,
    google_api: GoogleApiServer,
    fakes: Any,
    clock: Any,
) -> None:
    report = run_doctor(_config(tmp_path, google_api.endpoint, [{"name": "jobs", "type": "gcp-jobs"}]), clock)
    [finding] = _by(report, "source")
    assert finding.status == "fail"
    assert finding.fix is not None and "gcp-billing-accounts" in finding.fix


def _ks_rules() -> dict[str, Any]:
    return {
        "allow_disable_billing": True,
        "rules": [
            {
                "name": "stop-dataproc",
                "when": {"job": {"platforms": ["dataproc"], "accounts": ["ml-proj-a"]}},
                "do": "stop",
                "resource_types": ["dataproc-cluster"],
                "how": "approve",
            },
            {
                "name": "cut-billing",
                "when": {"incident": {"min_severity": "critical"}},
                "do": "disable-billing",
                "how": "approve",
            },
        ],
    }


def test_kill_switch_permissions_on_projects_and_billing_accounts(
    tmp_path: Path,
    google_api: GoogleApiServer,
    fakes: Any,
    clock: Any,
) -> None:
    iam, _ = fakes
    iam.grant("projects/ml-proj-a", "dataproc.clusters.get", "dataproc.clusters.stop", "resourcemanager.projects.get")
    iam.grant(f"billingAccounts/{ACCOUNT}")
    config = _config(tmp_path, google_api.endpoint, [{"name": "d", "type": "simulated"}], _ks_rules())
    report = run_doctor(config, clock, gcp_billing_accounts=[ACCOUNT])
    findings = _by(report, "killswitch")
    project_fail = next(f for f in findings if "project ml-proj-a" in f.subject and f.status == "fail")
    assert project_fail.message == "missing resourcemanager.projects.deleteBillingAssignment (rule cut-billing)"
    project_warn = next(f for f in findings if "project ml-proj-a" in f.subject and f.status == "warn")
    assert "dataproc.clusters.start (rule stop-dataproc)" in project_warn.message  # undo only
    account_fail = next(f for f in findings if f"billing account {ACCOUNT}" in f.subject)
    assert account_fail.status == "fail"
    assert "billing.resourceAssociations.delete" in account_fail.message
    assert account_fail.fix is not None and "deploy/gcp/killswitch-role.yaml" in account_fail.fix
    # billing.* permissions are asked of the billing account, the rest of the project
    assert all(not p.startswith("billing.") for asked in iam.tested("projects/ml-proj-a") for p in asked)
    assert iam.tested(f"billingAccounts/{ACCOUNT}") == [["billing.resourceAssociations.delete"]]
    assert not report.ok


def test_kill_switch_without_a_known_scope_warns_and_names_the_option(
    tmp_path: Path,
    google_api: GoogleApiServer,
    fakes: Any,
    clock: Any,
) -> None:
    rules = _ks_rules()
    rules["rules"][0]["when"]["job"]["accounts"] = ["ml-*"]  # a glob: not a project to test on
    config = _config(tmp_path, google_api.endpoint, [{"name": "d", "type": "simulated"}], rules)
    report = run_doctor(config, clock)
    warns = [f for f in _by(report, "killswitch") if f.status == "warn"]
    assert {w.fix for w in warns} == {
        "name one: spendwatch doctor --gcp-project PROJECT (repeatable)",
        "name one: spendwatch doctor --gcp-billing-account ID (repeatable)",
    }


def test_service_account_key_is_refreshed_and_named(
    tmp_path: Path,
    google_api: GoogleApiServer,
    fakes: Any,
    clock: Any,
) -> None:
    iam, bq = fakes
    bq.add_table(TABLE, schema=[{"name": "cost", "type": "FLOAT"}])
    iam.grant("projects/billing-proj", "bigquery.jobs.create")
    email = "spendwatch@billing-proj.iam.gserviceaccount.com"
    key = service_account_key(tmp_path / "key.json", email, f"{google_api.endpoint}/token")
    gcp = _gcp(google_api.endpoint, anonymous=False, credentials_file=str(key))
    config = _config(tmp_path, google_api.endpoint, [{**EXPORT, "gcp": gcp}])
    report = run_doctor(config, clock)
    [identity] = _by(report, "credentials")
    assert identity.status == "ok"
    assert identity.message.startswith(f"serviceAccount:{email}")
    assert report.ok
    [token_call] = google_api.calls("POST", "/token")
    assert b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer" in token_call.body
    tables_get = google_api.calls("GET", "/bigquery/v2/projects/{p}/datasets/{d}/tables/{t}")
    assert tables_get[0].headers["authorization"] == "Bearer ya29.fake"


def test_rejected_credentials_fail_with_the_workload_identity_hint(
    tmp_path: Path,
    google_api: GoogleApiServer,
    fakes: Any,
    clock: Any,
) -> None:
    iam, _ = fakes
    iam.token_error = "Invalid JWT Signature."
    key = service_account_key(tmp_path / "key.json", "sw@p.iam.gserviceaccount.com", f"{google_api.endpoint}/token")
    gcp = _gcp(google_api.endpoint, anonymous=False, credentials_file=str(key))
    report = run_doctor(_config(tmp_path, google_api.endpoint, [{**EXPORT, "gcp": gcp}]), clock)
    [identity] = _by(report, "credentials")
    assert identity.status == "fail"
    assert "Google rejected the credentials" in identity.message and "invalid_grant" in identity.message
    assert identity.fix is not None and "workloadIdentityUser" in identity.fix
    [source] = _by(report, "source")
    assert source.status == "fail"  # and the source check says the same instead of crashing


def test_no_application_default_credentials(
    tmp_path: Path,
    google_api: GoogleApiServer,
    fakes: Any,
    clock: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "no-gcloud"))
    gcp = _gcp(google_api.endpoint, anonymous=False)
    report = run_doctor(_config(tmp_path, google_api.endpoint, [{**EXPORT, "gcp": gcp}]), clock)
    [identity] = _by(report, "credentials")
    assert identity.status == "fail"
    assert "no Google credentials found" in identity.message
    assert identity.fix is not None and "Workload Identity" in identity.fix


def test_the_shipped_kill_switch_role_covers_every_gcp_action(
    tmp_path: Path, google_api: GoogleApiServer, fakes: Any, clock: Any
) -> None:
    role = Path(__file__).resolve().parents[2] / "deploy" / "gcp" / "killswitch-role.yaml"
    if not role.is_file():
        pytest.skip(f"{role} is not in the checkout yet (the kill-switch engineer ships it)")
    from spendwatch.killswitch.base import ACTIONS

    iam, _ = fakes
    granted = yaml.safe_load(role.read_text())["includedPermissions"]
    iam.grant("projects/ml-proj-a", *granted)  # IAM accepts billing.* on a project role too …
    iam.grant(f"billingAccounts/{ACCOUNT}", *granted)  # … but they take effect on the billing account
    pairs = sorted({(cls.resource_type, cls.verb) for _, cls in ACTIONS.items() if cls.provider == "gcp"})
    rules = [
        {"name": f"r{i}", "when": {"job": {"accounts": ["ml-proj-a"]}}, "do": verb, "resource_types": [rtype],
         "how": "approve"}
        for i, (rtype, verb) in enumerate(pairs)
    ]  # fmt: skip
    killswitch = {"allow_disable_billing": True, "rules": rules}
    config = _config(tmp_path, google_api.endpoint, [{"name": "d", "type": "simulated"}], killswitch)
    report = run_doctor(config, clock, gcp_billing_accounts=[ACCOUNT])
    problems = [f for f in _by(report, "killswitch") if f.status in ("fail", "warn")]
    assert problems == []
    assert len([f for f in _by(report, "killswitch") if f.status == "ok"]) == 2  # the project and the account
