"""Where moto lacks the call (SageMaker stop training/transform, Glue batch-stop), botocore's Stubber
checks every request and response against the real service model."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from spendwatch.killswitch.engine import run_killswitch
from spendwatch.store import Store
from tests.killswitch.factories import ACCOUNT, REGION, job, rule, settings

ARN = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}"


@pytest.fixture
def sagemaker() -> Iterator[tuple[Any, Stubber]]:
    client = boto3.Session(region_name=REGION).client("sagemaker", endpoint_url="http://127.0.0.1:9")
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def _training(name: str, status: str) -> dict[str, Any]:
    return {
        "TrainingJobName": name,
        "TrainingJobArn": f"{ARN}:training-job/{name}",
        "ModelArtifacts": {"S3ModelArtifacts": "s3://models/out"},
        "TrainingJobStatus": status,
        "SecondaryStatus": "Training",
        "AlgorithmSpecification": {"TrainingInputMode": "File", "TrainingImage": "img"},
        "ResourceConfig": {"InstanceType": "ml.p4d.24xlarge", "InstanceCount": 4, "VolumeSizeInGB": 100},
        "StoppingCondition": {"MaxRuntimeInSeconds": 86400},
        "CreationTime": datetime(2026, 11, 20, 7, tzinfo=UTC),
    }


def test_sagemaker_training_stop(sagemaker: tuple[Any, Stubber], store: Store, ks_clock: Any) -> None:
    client, stub = sagemaker
    stub.add_response("describe_training_job", _training("llm-ft", "InProgress"), {"TrainingJobName": "llm-ft"})
    stub.add_response(
        "list_tags", {"Tags": [{"Key": "owner", "Value": "ana"}]}, {"ResourceArn": f"{ARN}:training-job/llm-ft"}
    )
    stub.add_response("stop_training_job", {}, {"TrainingJobName": "llm-ft"})
    spec = rule(do="stop", allow_irreversible=True, when={"job": {"platforms": ["sagemaker"]}})
    record = job("sagemaker", "llm-ft", resource_id=f"{ARN}:training-job/llm-ft")

    run = run_killswitch(settings([spec]), store, ks_clock, jobs=[record], clients={"aws:sagemaker": client})

    [done] = run.executed
    assert done.target.resource_type == "sagemaker-training-job" and done.state == "done"


def test_sagemaker_training_protected_by_tag(sagemaker: tuple[Any, Stubber], store: Store, ks_clock: Any) -> None:
    client, stub = sagemaker
    stub.add_response("describe_training_job", _training("prod-model", "InProgress"), {"TrainingJobName": "prod-model"})
    stub.add_response(
        "list_tags",
        {"Tags": [{"Key": "spendwatch:protect", "Value": "true"}]},
        {"ResourceArn": f"{ARN}:training-job/prod-model"},
    )
    spec = rule(do="stop", allow_irreversible=True, when={"job": {"platforms": ["sagemaker"]}})

    run = run_killswitch(
        settings([spec]), store, ks_clock, jobs=[job("sagemaker", "prod-model")], clients={"aws:sagemaker": client}
    )

    assert not run.executed  # the Stubber would fail on an unexpected stop_training_job
    assert "spendwatch:protect=true (on re-read)" in run.skipped[0].reason


def test_sagemaker_transform_irreversible_defaults_to_approval(
    sagemaker: tuple[Any, Stubber], store: Store, ks_clock: Any
) -> None:
    client, stub = sagemaker
    describe = {
        "TransformJobName": "batch-inf",
        "TransformJobArn": f"{ARN}:transform-job/batch-inf",
        "TransformJobStatus": "InProgress",
        "ModelName": "m",
        "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://in/"}}},
        "TransformResources": {"InstanceType": "ml.g5.12xlarge", "InstanceCount": 8},
        "CreationTime": datetime(2026, 11, 20, 7, tzinfo=UTC),
    }
    for _ in range(2):  # planned run, then the approval re-reads
        stub.add_response("describe_transform_job", describe, {"TransformJobName": "batch-inf"})
        stub.add_response("list_tags", {"Tags": []}, {"ResourceArn": f"{ARN}:transform-job/batch-inf"})
    stub.add_response("stop_transform_job", {}, {"TransformJobName": "batch-inf"})
    spec = rule(
        do="stop",
        how="enforce",
        resource_types=["sagemaker-transform-job", "ec2-instance"],
        when={"job": {"platforms": ["sagemaker-transform"]}},
    )
    config = settings([spec])

    run = run_killswitch(
        config, store, ks_clock, jobs=[job("sagemaker-transform", "batch-inf")], clients={"aws:sagemaker": client}
    )
    [waiting] = run.awaiting_approval
    assert waiting.mode == "approve" and "irreversible" in waiting.plan["notes"][0]

    from spendwatch.killswitch.engine import KillSwitch

    done = KillSwitch(config, store, ks_clock, clients={"aws:sagemaker": client}).approve(waiting.id, "lead")
    assert done.state == "done"


def test_glue_batch_stop_job_run(store: Store, ks_clock: Any) -> None:
    client = boto3.Session(region_name=REGION).client("glue", endpoint_url="http://127.0.0.1:9")
    run_arn = f"arn:aws:glue:{REGION}:{ACCOUNT}:job/nightly-etl"
    with Stubber(client) as stub:
        stub.add_response(
            "get_job_run",
            {"JobRun": {"Id": "jr_42", "JobName": "nightly-etl", "JobRunState": "RUNNING"}},
            {"JobName": "nightly-etl", "RunId": "jr_42"},
        )
        stub.add_response("get_tags", {"Tags": {"owner": "etl"}}, {"ResourceArn": run_arn})
        stub.add_response(
            "batch_stop_job_run",
            {"SuccessfulSubmissions": [{"JobName": "nightly-etl", "JobRunId": "jr_42"}], "Errors": []},
            {"JobName": "nightly-etl", "JobRunIds": ["jr_42"]},
        )
        spec = rule(do="stop", allow_irreversible=True, when={"job": {"platforms": ["glue"]}})
        run = run_killswitch(
            settings([spec]),
            store,
            ks_clock,
            jobs=[job("glue", "jr_42", name="nightly-etl", owner="etl")],
            clients={"aws:glue": client},
        )
        stub.assert_no_pending_responses()
    [done] = run.executed
    assert done.target.resource_id == "nightly-etl/jr_42"


def test_glue_refusal_in_errors_list_fails_the_action(store: Store, ks_clock: Any) -> None:
    client = boto3.Session(region_name=REGION).client("glue", endpoint_url="http://127.0.0.1:9")
    with Stubber(client) as stub:
        stub.add_response("get_job_run", {"JobRun": {"Id": "jr_7", "JobName": "etl", "JobRunState": "RUNNING"}})
        stub.add_response("get_tags", {"Tags": {}})
        stub.add_response(
            "batch_stop_job_run",
            {
                "SuccessfulSubmissions": [],
                "Errors": [
                    {
                        "JobName": "etl",
                        "JobRunId": "jr_7",
                        "ErrorDetail": {"ErrorCode": "InvalidInputException", "ErrorMessage": "run is not running"},
                    }
                ],
            },
        )
        spec = rule(do="stop", allow_irreversible=True, when={"job": {"platforms": ["glue"]}})
        run = run_killswitch(
            settings([spec]), store, ks_clock, jobs=[job("glue", "jr_7", name="etl")], clients={"aws:glue": client}
        )
    [failed] = run.failed
    assert failed.state == "failed" and "InvalidInputException: run is not running" in (failed.error or "")
