"""``spendwatch guard audit``: Athena workgroups (moto; Stubber for UpdateWorkGroup, which moto lacks),
SageMaker limits (Stubber), BigQuery quotas (Cloud Quotas REST on the fake Google server), and the CLI."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber
from click.testing import CliRunner

from spendwatch.cli import main
from spendwatch.config import Config
from spendwatch.errors import InputError
from spendwatch.guard.audit import AuditOptions, audit, parse_bytes
from tests.doubles.google import ApiRequest, GoogleApiServer, permission_denied
from tests.guard.conftest import NOW

REGION = "us-east-1"
ONLY = {"athena": False, "sagemaker": False, "emr": False, "glue": False, "batch": False}
UNLIMITED = "9223372036854775807"


def aws(endpoint: str | None, **platforms: bool) -> dict[str, Any]:
    return {
        "name": "aws-jobs",
        "type": "aws-jobs",
        "aws": {"region": REGION, "endpoint_url": endpoint},
        **ONLY,
        **platforms,
    }


def gcp(endpoint: str, projects: list[str]) -> dict[str, Any]:
    return {
        "name": "gcp-jobs",
        "type": "gcp-jobs",
        "gcp": {"project": projects[0], "anonymous": True, "endpoints": {"cloudquotas": endpoint}},
        "projects": projects,
        "vertex": {"enabled": False},
        "dataproc": {"enabled": False},
    }


def config(*sources: dict[str, Any]) -> Config:
    return Config.model_validate({"sources": list(sources)})


def athena_groups(moto_server: Any) -> Any:
    athena = boto3.client("athena", endpoint_url=moto_server.endpoint_url, region_name=REGION)
    athena.create_work_group(Name="capped", Configuration={"BytesScannedCutoffPerQuery": 10**12})
    athena.create_work_group(Name="open-analysts", Configuration={})
    return athena


def test_athena_workgroups_without_a_cutoff_are_listed_with_the_fix(moto_server: Any) -> None:
    athena_groups(moto_server)

    report = audit(config(aws(moto_server.endpoint_url, athena=True)), now=NOW)

    found = {f.resource: f for f in report.findings}
    assert "capped" not in found and "open-analysts" in found
    assert found["open-analysts"].fix == (
        "aws athena update-work-group --region us-east-1 --work-group open-analysts "
        "--configuration-updates BytesScannedCutoffPerQuery=1099511627776"
    )
    assert report.checked["athena"] == len(found) + 1 and report.problems == []


def test_fix_athena_cutoff_is_a_dry_run_unless_applied(moto_server: Any) -> None:
    athena = athena_groups(moto_server)
    options = AuditOptions(fix_athena_cutoff=500 * 10**9)

    report = audit(config(aws(moto_server.endpoint_url, athena=True)), now=NOW, options=options)

    assert any("would set athena workgroup open-analysts" in line for line in report.planned)
    assert report.applied == []
    assert (
        "BytesScannedCutoffPerQuery"
        not in athena.get_work_group(WorkGroup="open-analysts")["WorkGroup"]["Configuration"]
    )


def test_applying_the_cutoff_updates_the_workgroup() -> None:
    client = boto3.Session(region_name=REGION).client("athena")
    stub = Stubber(client)
    stub.add_response("list_work_groups", {"WorkGroups": [{"Name": "adhoc", "State": "ENABLED"}]})
    stub.add_response("get_work_group", {"WorkGroup": {"Name": "adhoc", "Configuration": {}}}, {"WorkGroup": "adhoc"})
    stub.add_response(
        "update_work_group",
        {},
        {"WorkGroup": "adhoc", "ConfigurationUpdates": {"BytesScannedCutoffPerQuery": 500_000_000_000}},
    )
    stub.activate()
    options = AuditOptions(fix_athena_cutoff=parse_bytes("500GB"), apply=True)

    report = audit(
        config(aws(None, athena=True)), now=NOW, options=options, clients={"aws-jobs": {"aws:athena": client}}
    )

    stub.assert_no_pending_responses()
    assert report.applied == [
        "set athena workgroup adhoc (us-east-1): BytesScannedCutoffPerQuery = 500,000,000,000 bytes"
    ]


@pytest.mark.parametrize(
    ("text", "value"), [("10000000", 10**7), ("500GB", 5 * 10**11), ("1TiB", 1 << 40), ("1.5 TB", 15 * 10**11)]
)
def test_sizes_parse(text: str, value: int) -> None:
    assert parse_bytes(text) == value


@pytest.mark.parametrize(
    ("text", "problem"), [("9MB", "under Athena's 10 MB minimum"), ("lots", "is not a size"), ("5 XB", "is not a size")]
)
def test_bad_sizes_are_refused(text: str, problem: str) -> None:
    with pytest.raises(InputError, match=problem):
        parse_bytes(text)


def _training(name: str, stopping: dict[str, Any]) -> dict[str, Any]:
    return {
        "TrainingJobName": name,
        "TrainingJobArn": f"arn:aws:sagemaker:{REGION}:111111111111:training-job/{name}",
        "ModelArtifacts": {"S3ModelArtifacts": "s3://m/a"},
        "TrainingJobStatus": "InProgress",
        "SecondaryStatus": "Training",
        "StoppingCondition": stopping,
        "CreationTime": NOW - timedelta(days=1),
    }


def test_sagemaker_jobs_without_a_runtime_limit_are_listed() -> None:
    client = boto3.Session(region_name=REGION).client("sagemaker")
    stub = Stubber(client)
    summaries = [
        {"TrainingJobName": n, "TrainingJobArn": f"arn:{n}", "CreationTime": NOW, "TrainingJobStatus": "InProgress"}
        for n in ("bounded", "unbounded", "month-long")
    ]
    stub.add_response(
        "list_training_jobs",
        {"TrainingJobSummaries": summaries},
        {"MaxResults": 100, "CreationTimeAfter": NOW - timedelta(days=7)},
    )
    stub.add_response("describe_training_job", _training("bounded", {"MaxRuntimeInSeconds": 86400}))
    stub.add_response("describe_training_job", _training("unbounded", {"MaxWaitTimeInSeconds": 3600}))
    stub.add_response("describe_training_job", _training("month-long", {"MaxRuntimeInSeconds": 28 * 86400}))
    stub.add_response(
        "list_processing_jobs",
        {
            "ProcessingJobSummaries": [
                {
                    "ProcessingJobName": "features",
                    "ProcessingJobArn": "arn:p",
                    "CreationTime": NOW,
                    "ProcessingJobStatus": "InProgress",
                }
            ]
        },
        {"MaxResults": 100, "CreationTimeAfter": ANY},
    )
    stub.add_response(
        "describe_processing_job",
        {
            "ProcessingJobName": "features",
            "ProcessingResources": {
                "ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.xlarge", "VolumeSizeInGB": 30}
            },
            "AppSpecification": {"ImageUri": "img"},
            "ProcessingJobArn": "arn:p",
            "ProcessingJobStatus": "InProgress",
            "CreationTime": NOW,
        },
        {"ProcessingJobName": "features"},
    )
    stub.activate()

    report = audit(config(aws(None, sagemaker=True)), now=NOW, clients={"aws-jobs": {"aws:sagemaker": client}})

    stub.assert_no_pending_responses()
    found = {f.resource: f for f in report.findings}
    assert set(found) == {"training:unbounded", "training:month-long", "processing:features"}
    assert "no StoppingCondition.MaxRuntimeInSeconds" in found["training:unbounded"].problem
    assert "2,419,200 s, longer than the 259,200 s" in found["training:month-long"].problem
    assert "--stopping-condition MaxRuntimeInSeconds=259200" in found["processing:features"].fix
    assert "Processor(max_runtime_in_seconds=…)" in found["processing:features"].fix
    assert report.checked["sagemaker"] == 4


def quotas(google_api: GoogleApiServer, values: dict[tuple[str, str], str]) -> None:
    def info(request: ApiRequest) -> dict[str, Any]:
        project, quota = request.params["project"], request.params["quota"]
        if project == "locked-down":
            raise permission_denied("cloudquotas.quotas.get", f"projects/{project}")
        value = values.get((project, quota), UNLIMITED)
        return {
            "name": request.path.removeprefix("/v1/"),
            "quotaId": quota,
            "service": "bigquery.googleapis.com",
            "dimensionsInfos": [{"details": {"value": value}, "applicableLocations": ["global"]}],
        }

    google_api.add_route(
        "GET", "/v1/projects/{project}/locations/global/services/bigquery.googleapis.com/quotaInfos/{quota}", info
    )


def test_bigquery_projects_without_a_custom_query_quota_are_listed(google_api: GoogleApiServer) -> None:
    quotas(
        google_api,
        {("capped-proj", "QueryUsagePerDay"): str(10 << 20), ("user-capped", "QueryUsagePerUserPerDay"): "1048576"},
    )
    options = AuditOptions(bigquery_daily=2 << 40)

    report = audit(
        config(gcp(google_api.endpoint, ["capped-proj", "user-capped", "wide-open"])), now=NOW, options=options
    )

    [finding] = report.findings
    assert finding.where == "wide-open" and finding.platform == "bigquery"
    assert finding.fix.startswith(
        "gcloud beta quotas preferences create --project=wide-open --service=bigquery.googleapis.com "
        "--quota-id=QueryUsagePerDay --preferred-value=2097152"
    )
    assert report.checked["bigquery"] == 3


def test_a_quota_api_refusal_is_a_problem_naming_the_permission(google_api: GoogleApiServer) -> None:
    quotas(google_api, {})
    report = audit(config(gcp(google_api.endpoint, ["locked-down"])), now=NOW)
    [problem] = report.problems
    assert "cloudquotas.quotas.get (roles/cloudquotas.viewer)" in problem and report.findings == []


def test_audit_cli_prints_each_finding_and_its_fix(
    moto_server: Any, google_api: GoogleApiServer, tmp_path: Path
) -> None:
    athena_groups(moto_server)
    quotas(google_api, {})
    path = tmp_path / "spendwatch.yaml"
    path.write_text(
        "store: {path: store.duckdb}\n"
        "sources:\n"
        f"  - {{name: aws-jobs, type: aws-jobs, aws: {{region: {REGION}, endpoint_url: '{moto_server.endpoint_url}'}},"
        " sagemaker: false, emr: false, glue: false, batch: false}\n"
        f"  - {{name: gcp-jobs, type: gcp-jobs, projects: [wide-open], vertex: {{enabled: false}},"
        f" dataproc: {{enabled: false}}, gcp: {{anonymous: true, endpoints: {{cloudquotas: '{google_api.endpoint}'}}}}}}\n"
    )
    runner = CliRunner()

    result = runner.invoke(main, ["-c", str(path), "guard", "audit", "--fail-on-findings"])

    assert result.exit_code == 1, result.output
    assert "athena open-analysts (us-east-1): no BytesScannedCutoffPerQuery" in result.output
    assert "fix: gcloud beta quotas preferences create --project=wide-open" in result.output
    bad = runner.invoke(main, ["-c", str(path), "guard", "audit", "--apply"])
    assert bad.exit_code == 2 and bad.output.strip() == (
        "spendwatch: error: --apply needs --fix-athena-cutoff BYTES (it is the only change the audit makes)"
    )
    small = runner.invoke(main, ["-c", str(path), "guard", "audit", "--fix-athena-cutoff", "1MB"])
    assert small.exit_code == 2 and "under Athena's 10 MB minimum" in small.output
    odd = runner.invoke(main, ["-c", str(path), "guard", "audit", "--sagemaker-max-runtime", "soon"])
    assert odd.exit_code == 2 and "--sagemaker-max-runtime" in odd.output
