"""spendwatch doctor on AWS: boto3 against moto server on 127.0.0.1 (IAM simulation: tests/doubles/aws_doctor.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from click.testing import CliRunner

from spendwatch.cli import main
from spendwatch.config import parse_config
from spendwatch.doctor import DoctorReport, Finding, run_doctor
from tests.doubles.aws_doctor import IamPolicySimulator, fail_with

REPO = Path(__file__).resolve().parents[2]
ROLE = "spendwatch-daemon"
TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}


def _policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def _allow(*actions: str, **condition: Any) -> dict[str, Any]:
    statement: dict[str, Any] = {"Effect": "Allow", "Action": list(actions), "Resource": "*"}
    if condition:
        statement["Condition"] = condition
    return statement


@pytest.fixture
def role_session(moto_server: Any) -> tuple[boto3.Session, IamPolicySimulator]:
    """A session holding the daemon role's credentials (as on EC2 / with IRSA), simulator installed."""
    iam = boto3.client("iam", endpoint_url=moto_server.endpoint_url, region_name="us-east-1")
    arn = iam.create_role(RoleName=ROLE, AssumeRolePolicyDocument=json.dumps(TRUST))["Role"]["Arn"]
    sts = boto3.client("sts", endpoint_url=moto_server.endpoint_url, region_name="us-east-1")
    creds = sts.assume_role(RoleArn=arn, RoleSessionName="i-0abc")["Credentials"]
    session = boto3.Session(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
        region_name="us-east-1",
    )
    simulator = IamPolicySimulator(moto_server.endpoint_url)
    simulator.install(session)
    return session, simulator


def _put_policy(moto_server: Any, document: str, name: str = "inline") -> None:
    iam = boto3.client("iam", endpoint_url=moto_server.endpoint_url, region_name="us-east-1")
    iam.put_role_policy(RoleName=ROLE, PolicyName=name, PolicyDocument=document)


def _config(
    tmp_path: Path, endpoint: str, *, sources: list[dict[str, Any]], rules: list[dict[str, Any]] | None = None
) -> Any:
    aws = {"endpoint_url": endpoint, "region": "us-east-1"}
    for source in sources:
        source.setdefault("aws", aws)
    data: dict[str, Any] = {"store": {"path": str(tmp_path / "state" / "spendwatch.duckdb")}, "sources": sources}
    if rules is not None:
        data["killswitch"] = {"aws": aws, "rules": rules, "approvers": ["lead"]}
    (tmp_path / "state").mkdir(exist_ok=True)
    path = tmp_path / "spendwatch.yaml"
    path.write_text(yaml.safe_dump(data))
    return parse_config(path.read_text(), path, environ={})


def _by(report: DoctorReport, check: str) -> list[Finding]:
    return [f for f in report.findings if f.check == check]


def _rule(name: str, resource_type: str, do: str, how: str) -> dict[str, Any]:
    return {
        "name": name,
        "when": {"job": {"min_estimated_cost": 100}},
        "do": do,
        "resource_types": [resource_type],
        "how": how,
    }


CE = {"name": "aws-costs", "type": "aws-cost-explorer"}


# -- identity and sources ------------------------------------------------------------------------------


def test_identity_and_cost_explorer_are_ok(tmp_path: Path, moto_server: Any, role_session: Any, clock: Any) -> None:
    session, _ = role_session
    config = _config(tmp_path, moto_server.endpoint_url, sources=[dict(CE)])
    report = run_doctor(config, clock, clients={"aws_session": session})
    [identity] = _by(report, "credentials")
    assert identity.status == "ok"
    assert f"assumed-role/{ROLE}/i-0abc" in identity.message
    assert "source aws-costs" in identity.message
    [source] = _by(report, "source")
    assert source.status == "ok", source
    assert "Cost Explorer answered for 2026-11-18" in source.message  # the fixed clock: 2026-11-20
    assert report.ok


def test_no_credentials_is_a_failure_that_says_how_to_get_them(
    tmp_path: Path, moto_server: Any, clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    config = _config(tmp_path, moto_server.endpoint_url, sources=[dict(CE)])
    report = run_doctor(config, clock)
    [identity] = _by(report, "credentials")
    assert identity.status == "fail"
    assert "no AWS credentials found" in identity.message
    assert identity.fix is not None and "IRSA" in identity.fix
    assert not report.ok


def test_a_denied_cost_explorer_names_the_permission_and_the_policy(
    tmp_path: Path, moto_server: Any, role_session: Any, clock: Any
) -> None:
    session, _ = role_session
    fail_with(session, "cost-explorer", "GetCostAndUsage", "AccessDeniedException")
    config = _config(tmp_path, moto_server.endpoint_url, sources=[dict(CE)])
    report = run_doctor(config, clock, clients={"aws_session": session})
    [source] = _by(report, "source")
    assert source.status == "fail"
    assert source.message == "denied: needs ce:GetCostAndUsage"
    assert (
        source.fix is not None and "deploy/aws/collector-policy.json" in source.fix and "CostExplorerRead" in source.fix
    )


def test_cost_explorer_not_enabled_yet_says_so(tmp_path: Path, moto_server: Any, role_session: Any, clock: Any) -> None:
    session, _ = role_session
    fail_with(session, "cost-explorer", "GetCostAndUsage", "DataUnavailableException")
    report = run_doctor(
        _config(tmp_path, moto_server.endpoint_url, sources=[dict(CE)]), clock, clients={"aws_session": session}
    )
    [source] = _by(report, "source")
    assert source.status == "fail"
    assert "no data" in source.message
    assert source.fix is not None and "Cost Explorer" in source.fix


def test_data_export_bucket_states(tmp_path: Path, moto_server: Any, role_session: Any, clock: Any) -> None:
    session, _ = role_session
    s3 = boto3.client("s3", endpoint_url=moto_server.endpoint_url, region_name="us-east-1")
    s3.create_bucket(Bucket="cur-bucket")
    s3.create_bucket(Bucket="empty-bucket")
    s3.put_object(
        Bucket="cur-bucket", Key="cur/spendwatch/metadata/BILLING_PERIOD=2026-11/spendwatch-Manifest.json", Body=b"{}"
    )
    sources = [
        {"name": "good", "type": "aws-data-export", "bucket": "cur-bucket", "prefix": "cur/spendwatch"},
        {"name": "empty", "type": "aws-data-export", "bucket": "empty-bucket", "prefix": "cur"},
        {"name": "missing", "type": "aws-data-export", "bucket": "no-such-bucket"},
    ]
    report = run_doctor(
        _config(tmp_path, moto_server.endpoint_url, sources=sources), clock, clients={"aws_session": session}
    )
    found = {f.subject.split(" ")[0]: f for f in _by(report, "source")}
    assert found["good"].status == "ok"
    assert "s3://cur-bucket/cur/spendwatch/: export manifests found" in found["good"].message
    assert found["empty"].status == "warn"
    assert "empty" in found["empty"].message
    assert found["missing"].status == "fail"
    assert "NoSuchBucket" in found["missing"].message
    assert not report.ok


def test_athena_workgroup_and_glue_table(tmp_path: Path, moto_server: Any, role_session: Any, clock: Any) -> None:
    session, _ = role_session
    boto3.client("s3", endpoint_url=moto_server.endpoint_url, region_name="us-east-1").create_bucket(Bucket="cur")
    glue = boto3.client("glue", endpoint_url=moto_server.endpoint_url, region_name="us-east-1")
    glue.create_database(DatabaseInput={"Name": "cur_db"})
    glue.create_table(DatabaseName="cur_db", TableInput={"Name": "cur_table"})
    athena = {"database": "cur_db", "table": "cur_table", "workgroup": "primary"}
    sources = [
        {"name": "pushdown", "type": "aws-data-export", "bucket": "cur", "athena": athena},
        {"name": "typo", "type": "aws-data-export", "bucket": "cur", "athena": {**athena, "table": "nope"}},
    ]
    report = run_doctor(
        _config(tmp_path, moto_server.endpoint_url, sources=sources), clock, clients={"aws_session": session}
    )
    pushdown = [f for f in _by(report, "source") if f.subject.startswith("pushdown")]
    assert any("Athena workgroup primary" in f.message for f in pushdown)
    assert any(f.status == "ok" and "Glue table cur_db.cur_table found" in f.message for f in pushdown)
    typo = [f for f in _by(report, "source") if f.subject.startswith("typo")]
    assert [(f.status, f.message) for f in typo if "Glue" in f.message or "Table" in f.message] == [
        ("fail", "EntityNotFoundException: Table nope not found.")
    ]
    assert any(f.status == "warn" and "no bytes-scanned cutoff" in f.message for f in typo)
    assert not report.ok


# -- kill-switch permissions ------------------------------------------------------------------------------


def test_missing_kill_switch_permissions_fail_for_acting_rules_and_warn_for_undo(
    tmp_path: Path, moto_server: Any, role_session: Any, clock: Any
) -> None:
    session, simulator = role_session
    _put_policy(moto_server, _policy(_allow("ec2:DescribeInstances", "ec2:StopInstances", "rds:DescribeDBInstances")))
    rules = [
        _rule("stop-idle-ec2", "ec2-instance", "stop", "enforce"),
        _rule("stop-rds", "rds-instance", "stop", "approve"),
    ]
    config = _config(tmp_path, moto_server.endpoint_url, sources=[dict(CE)], rules=rules)
    report = run_doctor(config, clock, clients={"aws_session": session})
    findings = _by(report, "killswitch")
    [fail] = [f for f in findings if f.status == "fail"]
    assert "rds:ListTagsForResource, rds:StopDBInstance (rule stop-rds)" in fail.message
    assert "ec2:StopInstances" not in fail.message
    assert fail.fix is not None and "deploy/aws/killswitch-policy.json" in fail.fix
    assert f"arn:aws:iam::123456789012:role/{ROLE}" in fail.subject  # the role behind the session
    [warn] = [f for f in findings if f.status == "warn"]
    assert "ec2:StartInstances" in warn.message and "rds:StartDBInstance" in warn.message  # only undo needs them
    assert not report.ok
    [call] = simulator.calls
    assert call["PolicySourceArn"] == f"arn:aws:iam::123456789012:role/{ROLE}"
    assert "ec2:StopInstances" in call["ActionNames"]


def test_dry_run_rules_only_warn(tmp_path: Path, moto_server: Any, role_session: Any, clock: Any) -> None:
    session, _ = role_session
    _put_policy(moto_server, _policy(_allow("ec2:DescribeInstances")))
    rules = [_rule("watch-ec2", "ec2-instance", "stop", "dry-run")]
    report = run_doctor(
        _config(tmp_path, moto_server.endpoint_url, sources=[dict(CE)], rules=rules),
        clock,
        clients={"aws_session": session},
    )
    statuses = [f.status for f in _by(report, "killswitch")]
    assert statuses == ["warn"]
    assert report.ok


def test_tag_conditioned_permissions_count_as_allowed_on_tagged_resources(
    tmp_path: Path, moto_server: Any, role_session: Any, clock: Any
) -> None:
    session, _ = role_session
    conditioned = _allow(
        "ec2:StopInstances", "ec2:StartInstances", StringEquals={"aws:ResourceTag/spendwatch-managed": "true"}
    )
    _put_policy(moto_server, _policy(_allow("ec2:DescribeInstances"), conditioned))
    rules = [_rule("stop-idle-ec2", "ec2-instance", "stop", "enforce")]
    report = run_doctor(
        _config(tmp_path, moto_server.endpoint_url, sources=[dict(CE)], rules=rules),
        clock,
        clients={"aws_session": session},
    )
    [finding] = _by(report, "killswitch")
    assert finding.status == "ok"
    assert "ec2:StopInstances (when aws:ResourceTag/spendwatch-managed)" in finding.message
    assert report.ok


def test_an_explicit_deny_beats_an_allow(tmp_path: Path, moto_server: Any, role_session: Any, clock: Any) -> None:
    session, _ = role_session
    deny = {"Effect": "Deny", "Action": "ec2:StopInstances", "Resource": "*"}
    _put_policy(moto_server, _policy(_allow("ec2:*"), deny))
    rules = [_rule("stop-idle-ec2", "ec2-instance", "stop", "enforce")]
    report = run_doctor(
        _config(tmp_path, moto_server.endpoint_url, sources=[dict(CE)], rules=rules),
        clock,
        clients={"aws_session": session},
    )
    [fail] = [f for f in _by(report, "killswitch") if f.status == "fail"]
    assert "ec2:StopInstances" in fail.message


def test_the_shipped_kill_switch_policy_covers_every_aws_action(
    tmp_path: Path, moto_server: Any, role_session: Any, clock: Any
) -> None:
    policy = REPO / "deploy" / "aws" / "killswitch-policy.json"
    if not policy.is_file():
        pytest.skip(f"{policy} is not in the checkout yet (the kill-switch engineer ships it)")
    from spendwatch.killswitch.base import ACTIONS

    session, _ = role_session
    _put_policy(moto_server, policy.read_text(), name="killswitch")
    pairs = sorted({(cls.resource_type, cls.verb) for _, cls in ACTIONS.items() if cls.provider == "aws"})
    rules = [_rule(f"r{i}", rtype, verb, "approve") for i, (rtype, verb) in enumerate(pairs)]
    config = _config(tmp_path, moto_server.endpoint_url, sources=[dict(CE)], rules=rules)
    report = run_doctor(config, clock, clients={"aws_session": session})
    assert [f for f in _by(report, "killswitch") if f.status == "fail"] == []


# -- the command ---------------------------------------------------------------------------------------------


def test_the_command_exits_1_and_prints_the_fix(
    tmp_path: Path, moto_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    _config(tmp_path, moto_server.endpoint_url, sources=[dict(CE)])
    result = CliRunner().invoke(main, ["doctor", "--config", str(tmp_path / "spendwatch.yaml")])
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"spendwatch doctor: {tmp_path / 'spendwatch.yaml'}"
    assert any(line.startswith("  FAIL  credentials") and "no AWS credentials found" in line for line in lines)
    assert any(line.strip().startswith("fix: give the daemon an identity") for line in lines)
    assert lines[-1].startswith("1 problem(s) to fix") or "problem(s) to fix" in lines[-1]


def test_the_command_exits_0_when_all_is_well_and_speaks_json(tmp_path: Path) -> None:
    (tmp_path / "spendwatch.yaml").write_text(
        f"store: {{path: {tmp_path / 'sw.duckdb'}}}\nsources:\n  - {{name: demo, type: simulated}}\n"
    )
    result = CliRunner().invoke(main, ["doctor", "--config", str(tmp_path / "spendwatch.yaml"), "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["ok"] is True
    assert {f["check"] for f in body["findings"]} == {"store", "source"}


def test_a_bad_config_is_exit_2_naming_the_key(tmp_path: Path) -> None:
    (tmp_path / "spendwatch.yaml").write_text("sources:\n  - {name: x, type: aws-cost-explorer, every: soon}\n")
    result = CliRunner().invoke(main, ["doctor", "--config", str(tmp_path / "spendwatch.yaml")])
    assert result.exit_code == 2
    assert "sources[0].every" in result.output


def test_an_unwritable_store_folder_fails(tmp_path: Path, clock: Any) -> None:
    path = tmp_path / "spendwatch.yaml"
    path.write_text(
        f"store: {{path: {tmp_path / 'absent' / 'sw.duckdb'}}}\nsources:\n  - {{name: d, type: simulated}}\n"
    )
    report = run_doctor(parse_config(path.read_text(), path, environ={}), clock)
    [store] = _by(report, "store")
    assert store.status == "fail"
    assert "does not exist" in store.message
    assert store.fix is not None and "StateDirectory" in store.fix
