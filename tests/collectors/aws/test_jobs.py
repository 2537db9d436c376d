"""aws-jobs: EMR and Glue against moto; SageMaker, Athena, Batch, CloudTrail and Pricing via Stubber."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

from spendwatch.collect import collect_source
from spendwatch.collectors.aws.cloudtrail import TokenBucket
from spendwatch.collectors.aws.jobs import AwsJobsConfig, list_running
from spendwatch.collectors.base import SourceContext
from spendwatch.store import Store
from tests.doubles.aws_calls import CallLog
from tests.doubles.clock import FixedClock

NOW = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
ONLY = {"athena": False, "sagemaker": False, "emr": False, "glue": False, "batch": False}


def config(moto: Any = None, **extra: Any) -> AwsJobsConfig:
    values: dict[str, Any] = {
        "name": "jobs",
        "type": "aws-jobs",
        "aws": {"region": "us-east-1", "endpoint_url": moto.endpoint_url if moto else None},
        **ONLY,
        **extra,
    }
    return AwsJobsConfig.model_validate(values)


def stubbed(session: Any, service: str) -> tuple[Any, Stubber]:
    client = session.client(service, region_name="us-east-1")
    return client, Stubber(client)


def sts_stub(session: Any) -> Any:
    client, stub = stubbed(session, "sts")
    stub.add_response(
        "get_caller_identity", {"Account": "111111111111", "Arn": "arn:aws:iam::111111111111:user/x", "UserId": "x"}
    )
    stub.activate()
    return client


def jobs(store: Store) -> dict[str, dict[str, Any]]:
    table = store.query_arrow("SELECT * FROM jobs ORDER BY job_id")
    return {row["job_id"]: row for row in table.to_pylist()}


def test_emr_clusters_from_moto_are_priced_by_instance_group(
    moto_server: Any, store: Store, clock: FixedClock, clients: dict[str, Any]
) -> None:
    emr = boto3.client("emr", endpoint_url=moto_server.endpoint_url, region_name="us-east-1")
    cluster = emr.run_job_flow(
        Name="nightly-etl",
        ReleaseLabel="emr-7.1.0",
        Instances={
            "InstanceGroups": [
                {"Name": "m", "InstanceRole": "MASTER", "InstanceType": "m5.xlarge", "InstanceCount": 1},
                {"Name": "c", "InstanceRole": "CORE", "InstanceType": "r5.2xlarge", "InstanceCount": 2},
            ],
            "KeepJobFlowAliveWhenNoSteps": True,
        },
        JobFlowRole="EMR_EC2_DefaultRole",
        ServiceRole="EMR_DefaultRole",
        Tags=[{"Key": "owner", "Value": "carol@example.com"}],
    )["JobFlowId"]
    created = emr.describe_cluster(ClusterId=cluster)["Cluster"]["Status"]["Timeline"]["CreationDateTime"]
    clock.set(created + timedelta(hours=2))

    run = collect_source(config(moto_server, emr=True), store, clock, clients=clients)

    assert run.ok, run.error or run.problems
    job = jobs(store)[cluster]
    hourly = (0.192 + 2 * 0.504) * 1.25
    assert job["platform"] == "emr" and job["state"] in ("RUNNING", "STARTING")
    assert job["owner"] == "carol@example.com" and job["owner_source"] == "tag:owner"
    assert job["instance_count"] == 3 and job["instance_type"] == "r5.2xlarge"
    assert job["estimated_cost"] == pytest.approx(hourly * 2, rel=0.01)
    assert job["sub_account_id"] == "123456789012"  # from the cluster ARN


def test_glue_runs_from_moto_cost_dpu_seconds(
    moto_server: Any, store: Store, clock: FixedClock, clients: dict[str, Any]
) -> None:
    glue = boto3.client("glue", endpoint_url=moto_server.endpoint_url, region_name="us-east-1")
    glue.create_job(Name="daily-load", Role="r", Command={"Name": "glueetl"}, Tags={"owner": "dave@example.com"})
    run_id = glue.start_job_run(JobName="daily-load")["JobRunId"]
    clock.set(datetime.now(UTC))

    run = collect_source(config(moto_server, glue=True), store, clock, clients=clients)

    assert run.ok, run.error or run.problems
    job = jobs(store)[run_id]
    assert job["name"] == "daily-load" and job["owner"] == "dave@example.com"
    assert job["estimated_cost"] == pytest.approx(10 * 123 / 3600 * 0.44, rel=1e-5)  # 10 DPU x 123 s
    assert job["cost_method"] == "10 DPU x seconds at $0.44/DPU-hour"


def sagemaker_training(stub: Stubber, *, status: str = "InProgress", billable: int | None = None) -> None:
    arn = "arn:aws:sagemaker:us-east-1:222222222222:training-job/llm-finetune"
    stub.add_response(
        "list_training_jobs",
        {
            "TrainingJobSummaries": [
                {
                    "TrainingJobName": "llm-finetune",
                    "TrainingJobArn": arn,
                    "CreationTime": NOW,
                    "TrainingJobStatus": status,
                }
            ]
        },
        {"MaxResults": 100, "StatusEquals": "InProgress"} if status == "InProgress" and billable is None else None,
    )
    described: dict[str, Any] = {
        "TrainingJobName": "llm-finetune",
        "TrainingJobArn": arn,
        "ModelArtifacts": {"S3ModelArtifacts": "s3://m/a"},
        "TrainingJobStatus": status,
        "SecondaryStatus": "Training",
        "AlgorithmSpecification": {"TrainingInputMode": "File", "TrainingImage": "img"},
        "ResourceConfig": {"InstanceType": "ml.p4d.24xlarge", "InstanceCount": 2, "VolumeSizeInGB": 100},
        "StoppingCondition": {"MaxRuntimeInSeconds": 5 * 24 * 3600},
        "CreationTime": NOW - timedelta(hours=10),
        "TrainingStartTime": NOW - timedelta(hours=9),
    }
    if billable is not None:
        described["BillableTimeInSeconds"] = billable
        described["TrainingEndTime"] = NOW - timedelta(hours=1)
    stub.add_response("describe_training_job", described, {"TrainingJobName": "llm-finetune"})
    stub.add_response(
        "list_tags", {"Tags": [{"Key": "project", "Value": "llm"}]}, {"ResourceArn": arn, "MaxResults": 100}
    )


def empty_sagemaker_lists(stub: Stubber) -> None:
    stub.add_response("list_processing_jobs", {"ProcessingJobSummaries": []})
    stub.add_response("list_transform_jobs", {"TransformJobSummaries": []})


def test_running_sagemaker_training_has_cost_so_far_and_at_its_limit(aws_session: Any, call_log: CallLog) -> None:
    client, stub = stubbed(aws_session, "sagemaker")
    sagemaker_training(stub)
    empty_sagemaker_lists(stub)
    stub.activate()
    context = SourceContext(
        clock=FixedClock(NOW), store=None, clients={"aws:sagemaker": client, "aws:sts": sts_stub(aws_session)}
    )  # type: ignore[arg-type]

    table = list_running(aws_session, config(sagemaker=True), now=NOW, context=context)

    stub.assert_no_pending_responses()
    [job] = table.to_pylist()
    hourly = 2 * 37.688
    assert job["state"] == "RUNNING" and job["sub_account_id"] == "222222222222"
    assert job["estimated_cost"] == pytest.approx(hourly * 9)
    assert job["max_runtime_seconds"] == 5 * 24 * 3600
    assert job["projected_cost"] == pytest.approx(hourly * 120)
    assert job["instance_type"] == "ml.p4d.24xlarge" and job["instance_count"] == 2
    assert job["labels"] == [("project", "llm")]
    assert "(bundled)" in job["cost_method"]


def test_finished_training_uses_billable_time(
    store: Store, clock: FixedClock, clients: dict[str, Any], aws_session: Any
) -> None:
    client, stub = stubbed(aws_session, "sagemaker")
    sagemaker_training(stub, status="Completed", billable=3 * 3600 * 2)
    empty_sagemaker_lists(stub)
    stub.activate()
    extra = {"aws:sagemaker": client, "aws:sts": sts_stub(aws_session)}

    run = collect_source(
        config(sagemaker=True, prices={"ml.p4d.24xlarge": 40.0}), store, clock, clients={**clients, **extra}
    )

    assert run.ok, run.error or run.problems
    job = jobs(store)["llm-finetune"]
    assert job["state"] == "SUCCEEDED" and job["estimated_cost"] == pytest.approx(2 * 40.0 * 3)
    assert "(config)" in job["cost_method"]


def athena_stub(stub: Stubber, executions: list[dict[str, Any]]) -> None:
    stub.add_response("list_work_groups", {"WorkGroups": [{"Name": "analysts", "State": "ENABLED"}]})
    stub.add_response(
        "list_query_executions",
        {"QueryExecutionIds": [e["QueryExecutionId"] for e in executions]},
        {"WorkGroup": "analysts", "MaxResults": 50},
    )
    stub.add_response(
        "batch_get_query_execution",
        {"QueryExecutions": executions, "UnprocessedQueryExecutionIds": []},
        {"QueryExecutionIds": [e["QueryExecutionId"] for e in executions]},
    )


def execution(query_id: str, state: str, scanned: int, *, done: bool = True) -> dict[str, Any]:
    status: dict[str, Any] = {"State": state, "SubmissionDateTime": NOW - timedelta(minutes=30)}
    if done:
        status["CompletionDateTime"] = NOW - timedelta(minutes=20)
    return {
        "QueryExecutionId": query_id,
        "Query": "SELECT * FROM   events CROSS JOIN events",
        "Status": status,
        "Statistics": {"DataScannedInBytes": scanned},
        "WorkGroup": "analysts",
    }


def cloudtrail_event(query_id: str, user: str) -> dict[str, Any]:
    detail = {"eventName": "StartQueryExecution", "responseElements": {"queryExecutionId": query_id}}
    return {
        "EventId": query_id,
        "EventName": "StartQueryExecution",
        "Username": user,
        "CloudTrailEvent": json.dumps(detail),
    }


def test_athena_queries_cost_bytes_with_the_minimum_and_owners_come_from_cloudtrail(
    store: Store, clock: FixedClock, clients: dict[str, Any], aws_session: Any, call_log: CallLog, sleeps: list[float]
) -> None:
    client, stub = stubbed(aws_session, "athena")
    athena_stub(
        stub,
        [
            execution("q-small", "SUCCEEDED", 1_000),
            execution("q-huge", "SUCCEEDED", 3_000_000_000_000),
            execution("q-running", "RUNNING", 200_000_000_000, done=False),
        ],
    )
    stub.activate()
    trail, trail_stub = stubbed(aws_session, "cloudtrail")
    for query_id, user in (
        ("q-small", "erin"),
        ("q-huge", "dana.kim@example.com"),
        ("q-running", "dana.kim@example.com"),
    ):
        trail_stub.add_response(
            "lookup_events", {"Events": [cloudtrail_event("other", "x"), cloudtrail_event(query_id, user)]}
        )
    trail_stub.activate()
    extra = {"aws:athena": client, "aws:cloudtrail": trail, "aws:sts": sts_stub(aws_session)}

    run = collect_source(
        config(athena=True, cloudtrail=True, cloudtrail_rate=2.0), store, clock, clients={**clients, **extra}
    )

    assert run.ok, run.error or run.problems
    found = jobs(store)
    assert found["q-small"]["bytes_billed"] == 10_000_000 and found["q-small"]["estimated_cost"] == pytest.approx(5e-5)
    assert found["q-huge"]["estimated_cost"] == pytest.approx(15.0)
    assert found["q-running"]["state"] == "RUNNING" and found["q-running"]["end_time"] is None
    assert found["q-huge"]["owner"] == "dana.kim@example.com"
    assert found["q-huge"]["owner_source"] == "cloudtrail:StartQueryExecution"
    assert found["q-small"]["query_hash"] == found["q-huge"]["query_hash"]
    lookups = call_log.operations("cloudtrail", "LookupEvents")
    assert len(lookups) == 3 and lookups[0]["LookupAttributes"][0]["AttributeValue"] == "StartQueryExecution"
    assert len(sleeps) == 1  # 2 req/s: the third lookup waited for a token


def test_known_owners_are_not_looked_up_again(
    store: Store, clock: FixedClock, clients: dict[str, Any], aws_session: Any, call_log: CallLog
) -> None:
    for attempt in range(2):
        client, stub = stubbed(aws_session, "athena")
        athena_stub(stub, [execution("q-1", "SUCCEEDED", 50_000_000)])
        stub.activate()
        trail, trail_stub = stubbed(aws_session, "cloudtrail")
        if attempt == 0:
            trail_stub.add_response("lookup_events", {"Events": [cloudtrail_event("q-1", "erin")]})
        trail_stub.activate()
        extra = {"aws:athena": client, "aws:cloudtrail": trail, "aws:sts": sts_stub(aws_session)}
        assert collect_source(config(athena=True, cloudtrail=True), store, clock, clients={**clients, **extra}).ok

    assert len(call_log.operations("cloudtrail", "LookupEvents")) == 1
    assert jobs(store)["q-1"]["owner"] == "erin"  # kept by the store's upsert


def test_batch_jobs_cost_vcpu_and_memory(
    store: Store, clock: FixedClock, clients: dict[str, Any], aws_session: Any
) -> None:
    client, stub = stubbed(aws_session, "batch")
    stub.add_response(
        "describe_job_queues",
        {
            "jobQueues": [
                {
                    "jobQueueName": "gpu",
                    "jobQueueArn": "arn:aws:batch:us-east-1:111111111111:job-queue/gpu",
                    "state": "ENABLED",
                    "priority": 1,
                    "computeEnvironmentOrder": [],
                }
            ]
        },
    )
    stub.add_response(
        "list_jobs",
        {"jobSummaryList": [{"jobId": "b-1", "jobName": "render"}]},
        {"jobQueue": "gpu", "maxResults": 100, "filters": [{"name": "AFTER_CREATED_AT", "values": [ANY]}]},
    )
    stub.add_response(
        "describe_jobs",
        {
            "jobs": [
                {
                    "jobId": "b-1",
                    "jobName": "render",
                    "jobArn": "arn:aws:batch:us-east-1:111111111111:job/b-1",
                    "jobQueue": "gpu",
                    "status": "RUNNING",
                    "startedAt": int((NOW - timedelta(hours=2)).timestamp() * 1000),
                    "createdAt": int((NOW - timedelta(hours=3)).timestamp() * 1000),
                    "jobDefinition": "render:1",
                    "timeout": {"attemptDurationSeconds": 36000},
                    "container": {
                        "resourceRequirements": [{"type": "VCPU", "value": "4"}, {"type": "MEMORY", "value": "8192"}]
                    },
                    "tags": {"owner": "frank"},
                }
            ]
        },
        {"jobs": ["b-1"]},
    )
    stub.activate()

    run = collect_source(
        config(batch=True), store, clock, clients={**clients, "aws:batch": client, "aws:sts": sts_stub(aws_session)}
    )

    assert run.ok, run.error or run.problems
    job = jobs(store)["b-1"]
    hourly = 4 * 0.04048 + 8 * 0.004445
    assert job["estimated_cost"] == pytest.approx(hourly * 2) and job["projected_cost"] == pytest.approx(hourly * 10)
    assert job["owner"] == "frank" and job["max_runtime_seconds"] == 36000


def test_a_denied_platform_is_a_problem_and_others_still_load(
    moto_server: Any, store: Store, clock: FixedClock, clients: dict[str, Any], aws_session: Any
) -> None:
    client, stub = stubbed(aws_session, "sagemaker")
    stub.add_client_error("list_training_jobs", "AccessDeniedException", "no", http_status_code=400)
    stub.activate()
    glue = boto3.client("glue", endpoint_url=moto_server.endpoint_url, region_name="us-east-1")
    glue.create_job(Name="j", Role="r", Command={"Name": "glueetl"})
    glue.start_job_run(JobName="j")
    clock.set(datetime.now(UTC))

    run = collect_source(
        config(moto_server, sagemaker=True, glue=True), store, clock, clients={**clients, "aws:sagemaker": client}
    )

    assert run.problems == [
        "jobs sagemaker us-east-1: source jobs: AWS denied sagemaker:ListTrainingJobs (AccessDeniedException); "
        "grant it to the collector's role (see deploy/aws/collector-policy.json)"
    ]
    assert store.query("SELECT platform, count(*) FROM jobs GROUP BY 1") == [("glue", 1)]


def test_pricing_api_answers_are_used_and_cached(
    store: Store, clock: FixedClock, clients: dict[str, Any], aws_session: Any, call_log: CallLog
) -> None:
    price = {
        "product": {"attributes": {"instanceType": "ml.p4d.24xlarge"}},
        "terms": {
            "OnDemand": {"x": {"priceDimensions": {"y": {"unit": "Hrs", "pricePerUnit": {"USD": "30.0000000000"}}}}}
        },
    }
    pricing, pricing_stub = stubbed(aws_session, "pricing")
    pricing_stub.add_response("get_products", {"PriceList": [json.dumps(price)], "FormatVersion": "aws_v1"})
    pricing_stub.activate()
    for _ in range(2):
        client, stub = stubbed(aws_session, "sagemaker")
        sagemaker_training(stub, status="Completed", billable=3600)
        empty_sagemaker_lists(stub)
        stub.activate()
        extra = {"aws:sagemaker": client, "aws:pricing": pricing, "aws:sts": sts_stub(aws_session)}
        run = collect_source(config(sagemaker=True, pricing_api=True), store, clock, clients={**clients, **extra})
        assert run.ok, run.error or run.problems

    job = jobs(store)["llm-finetune"]
    assert job["estimated_cost"] == pytest.approx(2 * 30.0 * 0.5) and "(pricing-api)" in job["cost_method"]
    assert len(call_log.operations("pricing", "GetProducts")) == 1  # the second run used the store's cache


def test_token_bucket_waits_for_the_rate() -> None:
    now = [0.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    bucket = TokenBucket(2.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(6):
        bucket.take()
    assert sum(waits) == pytest.approx(2.0)  # 6 requests at 2/s with a burst of 2: 2 seconds of waiting


def test_cloudtrail_rate_above_aws_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="less than or equal to 2"):
        config(cloudtrail=True, cloudtrail_rate=5)
