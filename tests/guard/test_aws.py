"""The guard on AWS: Athena's incremental reader and the listers through the guard's clients (botocore
Stubber where moto lacks the API — BatchGetQueryExecution, SageMaker running jobs — moto for the rest),
and the kill switch acting on guard incidents against moto."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from spendwatch.config import Config
from spendwatch.detect.incidents import load_incidents
from spendwatch.guard import GuardRun, run_guard
from spendwatch.guard.state import WatchState
from spendwatch.killswitch.journal import list_actions
from spendwatch.store import Store
from tests.doubles.aws_calls import CallLog, denied, recording_session
from tests.doubles.clock import FixedClock
from tests.doubles.waits import PATIENCE
from tests.guard.conftest import NOW

ACCOUNT = "111111111111"
REGION = "us-east-1"
ONLY = {"athena": False, "sagemaker": False, "emr": False, "glue": False, "batch": False}
OFF = {"job_cost": None, "job_projected_cost": None, "user_daily_cost": None, "project_burn_rate": None}
# What the guard calls beyond deploy/aws/collector-policy.json: nothing (workgroup tags are in its JobUsageRead).
GUARD_EXTRA_ACTIONS: set[str] = set()


def aws_config(
    tmp_path: Path,
    *,
    source: dict[str, Any],
    guard: dict[str, Any] | None = None,
    rules: list[dict[str, Any]] | None = None,
    endpoint: str | None = None,
) -> Config:
    return Config.model_validate(
        {
            "store": {"path": str(tmp_path / "store.duckdb")},
            "sources": [
                {
                    "name": "aws-jobs",
                    "type": "aws-jobs",
                    "aws": {"region": REGION, "endpoint_url": endpoint},
                    **ONLY,
                    **source,
                }
            ],
            "killswitch": {"rules": rules or [], "aws": {"region": REGION, "endpoint_url": endpoint}},
            "guard": guard or {"defaults": OFF},
        }
    )


@pytest.fixture
def call_log() -> Iterator[CallLog]:
    log = CallLog()
    yield log
    missing = denied(log.actions) - GUARD_EXTRA_ACTIONS
    assert not missing, f"AWS calls not allowed by deploy/aws/collector-policy.json: {sorted(missing)}"


@pytest.fixture
def session(call_log: CallLog) -> Any:
    return recording_session(call_log, REGION)


def stubbed(session: Any, service: str) -> tuple[Any, Stubber]:
    client = session.client(service, region_name=REGION)
    return client, Stubber(client)


def sts(session: Any) -> Any:
    client, stub = stubbed(session, "sts")
    stub.add_response(
        "get_caller_identity", {"Account": ACCOUNT, "Arn": f"arn:aws:iam::{ACCOUNT}:user/g", "UserId": "g"}
    )
    stub.activate()
    return client


def poll(config: Config, store: Store, clock: FixedClock, state: WatchState, clients: dict[str, Any]) -> GuardRun:
    run = run_guard(config, store, clock, clients, state=state)
    clock.advance(minutes=1)
    return run


# -- Athena ------------------------------------------------------------------------------------------


def execution(query_id: str, state: str, scanned: int, minutes_ago: float) -> dict[str, Any]:
    return {
        "QueryExecutionId": query_id,
        "Query": "SELECT * FROM events CROSS JOIN events",
        "Status": {"State": state, "SubmissionDateTime": NOW - timedelta(minutes=minutes_ago)},
        "Statistics": {"DataScannedInBytes": scanned},
        "WorkGroup": "primary",
    }


def batch_get(stub: Stubber, executions: list[dict[str, Any]]) -> None:
    ids = [e["QueryExecutionId"] for e in executions]
    stub.add_response(
        "batch_get_query_execution",
        {"QueryExecutions": executions, "UnprocessedQueryExecutionIds": []},
        {"QueryExecutionIds": ids},
    )


def listed(stub: Stubber, ids: list[str]) -> None:
    stub.add_response("list_query_executions", {"QueryExecutionIds": ids}, {"WorkGroup": "primary", "MaxResults": 50})


TB = 10**12


def test_athena_reads_only_new_and_running_queries_and_projects_to_the_cutoff(
    session: Any, store: Store, clock: FixedClock, tmp_path: Path, call_log: CallLog
) -> None:
    athena, stub = stubbed(session, "athena")
    stub.add_response(
        "list_work_groups",
        {"WorkGroups": [{"Name": "primary", "State": "ENABLED"}, {"Name": "old", "State": "DISABLED"}]},
        {"MaxResults": 50},
    )
    listed(stub, ["q3", "q2", "q1"])
    batch_get(
        stub,
        [
            execution("q3", "RUNNING", 40 * TB, 20),
            execution("q2", "SUCCEEDED", 5 * TB, 25),
            execution("q1", "RUNNING", TB, 30),
        ],
    )
    stub.add_response(
        "get_work_group",
        {"WorkGroup": {"Name": "primary", "Configuration": {"BytesScannedCutoffPerQuery": 50 * TB}}},
        {"WorkGroup": "primary"},
    )
    stub.add_response(
        "list_tags_for_resource",
        {"Tags": [{"Key": "owner", "Value": "analytics@example.com"}]},
        {"ResourceARN": f"arn:aws:athena:{REGION}:{ACCOUNT}:workgroup/primary"},
    )
    # Poll 2: one new query; the two known to be running are refreshed; nothing else is read again.
    listed(stub, ["q4", "q3", "q2", "q1"])
    batch_get(stub, [execution("q4", "QUEUED", 0, 0)])
    batch_get(stub, [execution("q1", "SUCCEEDED", TB, 31), execution("q3", "RUNNING", 43 * TB, 21)])
    stub.activate()
    config = aws_config(tmp_path, source={"athena": True}, guard={"defaults": {**OFF, "job_cost": 150}})
    clients = {"aws-jobs": {"boto3_session": session, "aws:athena": athena, "aws:sts": sts(session)}}
    state = WatchState.new(config.guard)

    first = poll(config, store, clock, state, clients)
    second = poll(config, store, clock, state, clients)

    stub.assert_no_pending_responses()
    assert first.poll is not None and second.poll is not None
    assert sum(first.poll.api_calls.values()) == 6 and second.poll.api_calls == {
        "athena:ListQueryExecutions": 1,
        "athena:BatchGetQueryExecution": 2,
    }
    q3 = {e.record["job_id"]: e for e in first.estimates}["q3"]
    assert q3.cost == pytest.approx(200.0) and q3.record["owner"] == "analytics@example.com"
    # 40 TB in 20 min → 20 TB more by the 30 min DML timeout = 60 TB, but the workgroup stops it at 50 TB.
    assert q3.projected == pytest.approx(250.0) and "BytesScannedCutoffPerQuery" in q3.method
    assert sorted(e.record["job_id"] for e in second.estimates) == ["q3", "q4"]
    [breach] = first.breaches
    assert breach.limit == "job-cost" and breach.dimensions["job_id"] == "q3"
    assert [i.status for i in load_incidents(store, kinds=["guard"])] == ["ongoing"]
    assert len(call_log.operations("athena", "ListWorkGroups")) == 1


@pytest.fixture
def athena_stays_queued(moto_server: Any) -> Iterator[None]:
    """moto keeps Athena queries QUEUED (as a long query would be) instead of finishing them at once."""

    def post(path: str, body: dict[str, Any]) -> None:
        request = urllib.request.Request(
            f"{moto_server.endpoint_url}{path}", data=json.dumps(body).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=PATIENCE) as response:
            response.read()

    post(
        "/moto-api/state-manager/set-transition",
        {"model_name": "athena::execution", "transition": {"progression": "manual", "times": 1000}},
    )
    yield
    post("/moto-api/state-manager/unset-transition", {"model_name": "athena::execution"})


def test_an_athena_breach_is_cancelled_once_through_the_journal(
    moto_server: Any, athena_stays_queued: None, session: Any, store: Store, clock: FixedClock, tmp_path: Path
) -> None:
    real = boto3.client("athena", endpoint_url=moto_server.endpoint_url, region_name=REGION)
    big = real.start_query_execution(
        QueryString="SELECT * FROM huge", ResultConfiguration={"OutputLocation": "s3://r/"}
    )
    small = real.start_query_execution(QueryString="SELECT 1", ResultConfiguration={"OutputLocation": "s3://r/"})
    big_id, small_id = big["QueryExecutionId"], small["QueryExecutionId"]
    athena, stub = stubbed(session, "athena")  # the listing (moto has no BatchGetQueryExecution)
    stub.add_response("list_work_groups", {"WorkGroups": [{"Name": "primary", "State": "ENABLED"}]})
    listed(stub, [small_id, big_id])
    batch_get(stub, [execution(small_id, "RUNNING", TB // 100, 5), execution(big_id, "RUNNING", 30 * TB, 10)])
    stub.add_response("get_work_group", {"WorkGroup": {"Name": "primary", "Configuration": {}}})
    stub.add_response("list_tags_for_resource", {"Tags": []})
    listed(stub, [small_id, big_id])
    refreshed = [execution(big_id, "CANCELLED", 30 * TB, 11), execution(small_id, "RUNNING", TB // 50, 6)]
    batch_get(stub, sorted(refreshed, key=lambda e: e["QueryExecutionId"]))  # known running ones, in id order
    stub.activate()
    rule = {
        "name": "cancel-athena",
        "when": {"incident": {"kinds": ["guard"], "dimensions": {"platform": ["athena"]}}},
        "do": "cancel",
        "how": "enforce",
        "allow_irreversible": True,
    }
    config = aws_config(
        tmp_path,
        source={"athena": True},
        guard={"defaults": {**OFF, "job_cost": 100}},
        rules=[rule],
        endpoint=moto_server.endpoint_url,
    )
    clients = {"aws-jobs": {"boto3_session": session, "aws:athena": athena, "aws:sts": sts(session)}}
    state = WatchState.new(config.guard)

    first = poll(config, store, clock, state, clients)
    second = poll(config, store, clock, state, clients)

    assert first.killswitch is not None and len(first.killswitch.executed) == 1
    assert real.get_query_execution(QueryExecutionId=big_id)["QueryExecution"]["Status"]["State"] == "CANCELLED"
    assert real.get_query_execution(QueryExecutionId=small_id)["QueryExecution"]["Status"]["State"] == "QUEUED"
    [action] = list_actions(store)
    assert action.target.resource_id == big_id and action.state == "done"
    [incident] = load_incidents(store, kinds=["guard"])
    assert incident.status == "resolved" and second.incidents.resolved == [incident.id]


# -- SageMaker through the lister -------------------------------------------------------------------


TRAINING_ARN = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/llm-finetune"


def training_listing(stub: Stubber, *, describe: bool) -> None:
    stub.add_response(
        "list_training_jobs",
        {
            "TrainingJobSummaries": [
                {
                    "TrainingJobName": "llm-finetune",
                    "TrainingJobArn": TRAINING_ARN,
                    "CreationTime": NOW - timedelta(hours=9),
                    "TrainingJobStatus": "InProgress",
                }
            ]
        },
        {"MaxResults": 100, "StatusEquals": "InProgress"},
    )
    if describe:
        stub.add_response(
            "describe_training_job",
            {
                "TrainingJobName": "llm-finetune",
                "TrainingJobArn": TRAINING_ARN,
                "ModelArtifacts": {"S3ModelArtifacts": "s3://m/a"},
                "TrainingJobStatus": "InProgress",
                "SecondaryStatus": "Training",
                "AlgorithmSpecification": {"TrainingInputMode": "File", "TrainingImage": "img"},
                "ResourceConfig": {"InstanceType": "ml.p4d.24xlarge", "InstanceCount": 2, "VolumeSizeInGB": 100},
                "StoppingCondition": {"MaxRuntimeInSeconds": 5 * 24 * 3600},
                "CreationTime": NOW - timedelta(hours=9),
                "TrainingStartTime": NOW - timedelta(hours=9),
            },
            {"TrainingJobName": "llm-finetune"},
        )
        stub.add_response(
            "list_tags",
            {"Tags": [{"Key": "owner", "Value": "ben.okafor@example.com"}]},
            {"ResourceArn": TRAINING_ARN, "MaxResults": 100},
        )
    stub.add_response("list_processing_jobs", {"ProcessingJobSummaries": []})
    stub.add_response("list_transform_jobs", {"TransformJobSummaries": []})


def test_sagemaker_jobs_are_described_once_and_a_runtime_breach_stops_the_job(
    session: Any, store: Store, clock: FixedClock, tmp_path: Path
) -> None:
    sagemaker, stub = stubbed(session, "sagemaker")
    training_listing(stub, describe=True)
    training_listing(stub, describe=False)  # poll 2: the description and tags are reused
    stub.activate()
    # The kill switch's own client (its calls fall under deploy/aws/killswitch-policy.json): re-read, then stop.
    actions = boto3.Session(region_name=REGION).client("sagemaker")
    action_stub = Stubber(actions)
    action_stub.add_response(
        "describe_training_job",
        {
            "TrainingJobName": "llm-finetune",
            "TrainingJobArn": TRAINING_ARN,
            "ModelArtifacts": {"S3ModelArtifacts": "s3://m/a"},
            "TrainingJobStatus": "InProgress",
            "SecondaryStatus": "Training",
            "AlgorithmSpecification": {"TrainingInputMode": "File", "TrainingImage": "img"},
            "ResourceConfig": {"InstanceType": "ml.p4d.24xlarge", "InstanceCount": 2, "VolumeSizeInGB": 100},
            "StoppingCondition": {"MaxRuntimeInSeconds": 5 * 24 * 3600},
            "CreationTime": NOW - timedelta(hours=9),
        },
    )
    action_stub.add_response("list_tags", {"Tags": [{"Key": "owner", "Value": "ben.okafor@example.com"}]})
    action_stub.add_response("stop_training_job", {}, {"TrainingJobName": "llm-finetune"})
    action_stub.activate()
    rule = {
        "name": "stop-long-training",
        "when": {"incident": {"kinds": ["guard"], "dimensions": {"limit": ["job-runtime"]}}},
        "do": "stop",
        "resource_types": ["sagemaker-training-job"],
        "how": "enforce",
        "allow_irreversible": True,
    }
    config = aws_config(
        tmp_path, source={"sagemaker": True}, guard={"defaults": {**OFF, "max_runtime": "8h"}}, rules=[rule]
    )
    clients = {
        "aws-jobs": {"boto3_session": session, "aws:sagemaker": sagemaker, "aws:sts": sts(session)},
        "killswitch": {"aws:sagemaker": actions},
    }
    state = WatchState.new(config.guard)

    first = poll(config, store, clock, state, clients)
    second = poll(config, store, clock, state, clients)

    stub.assert_no_pending_responses()
    action_stub.assert_no_pending_responses()
    assert first.poll is not None and second.poll is not None
    assert "sagemaker:DescribeTrainingJob" in first.poll.api_calls
    assert "sagemaker:DescribeTrainingJob" not in second.poll.api_calls
    [item] = first.estimates
    assert item.cost == pytest.approx(2 * 37.688 * 9) and item.projected == pytest.approx(2 * 37.688 * 120)
    assert item.burn_rate == pytest.approx(2 * 37.688)
    [breach] = first.breaches
    assert breach.limit == "job-runtime" and "has run 9h00m, over its 8h00m limit" in breach.summary
    assert breach.expected_total == pytest.approx(2 * 37.688 * 8)  # its cost at the limit
    [action] = list_actions(store)
    assert (action.state, action.target.resource_id) == ("done", "llm-finetune")
    assert second.killswitch is not None and second.killswitch.unchanged == 1  # one stop, however many polls


# -- EMR on moto: caching and the project burn rate --------------------------------------------------


def emr_cluster(emr: Any, name: str, owner: str) -> str:
    cluster: str = emr.run_job_flow(
        Name=name,
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
        Tags=[{"Key": "owner", "Value": owner}],
    )["JobFlowId"]
    return cluster


def test_emr_clusters_burn_rate_per_account_and_descriptions_are_reused(
    moto_server: Any, session: Any, store: Store, clock: FixedClock, tmp_path: Path
) -> None:
    emr = boto3.client("emr", endpoint_url=moto_server.endpoint_url, region_name=REGION)
    first_id = emr_cluster(emr, "etl-a", "carol@example.com")
    emr_cluster(emr, "etl-b", "dave@example.com")
    created = emr.describe_cluster(ClusterId=first_id)["Cluster"]["Status"]["Timeline"]["CreationDateTime"]
    clock.set(created + timedelta(hours=2))
    config = aws_config(
        tmp_path,
        source={"emr": True},
        guard={"defaults": {**OFF, "project_burn_rate": 2.5}},
        endpoint=moto_server.endpoint_url,
    )
    clients = {"aws-jobs": {"boto3_session": session}}
    state = WatchState.new(config.guard)

    first = poll(config, store, clock, state, clients)
    second = poll(config, store, clock, state, clients)

    hourly = (0.192 + 2 * 0.504) * 1.25
    assert sorted(round(e.burn_rate or 0, 4) for e in first.estimates) == [round(hourly, 4)] * 2
    assert second.poll is not None and set(second.poll.api_calls) == {"emr:ListClusters"}
    [breach] = second.breaches
    assert breach.limit == "project-burn-rate" and breach.actual == pytest.approx(2 * hourly, rel=0.01)
    assert {j.user for j in breach.jobs} == {"carol@example.com", "dave@example.com"}
    assert "123456789012 is burning 3.00 USD/h across 2 running job(s), over its 2.50 USD/h cap" in breach.summary


# -- Batch and Glue: what is reused between polls ----------------------------------------------------


def batch_job(status: str) -> dict[str, Any]:
    return {
        "jobId": "b-1",
        "jobName": "render",
        "jobArn": f"arn:aws:batch:{REGION}:{ACCOUNT}:job/b-1",
        "jobQueue": "gpu",
        "status": status,
        "startedAt": int((NOW - timedelta(hours=2)).timestamp() * 1000),
        "createdAt": int((NOW - timedelta(hours=3)).timestamp() * 1000),
        "jobDefinition": "render:1",
        "container": {"resourceRequirements": [{"type": "VCPU", "value": "4"}, {"type": "MEMORY", "value": "8192"}]},
        "tags": {"owner": "frank"},
    }


def test_batch_jobs_are_described_again_only_when_their_status_changes(
    session: Any, store: Store, clock: FixedClock, tmp_path: Path
) -> None:
    batch, stub = stubbed(session, "batch")
    queue = {
        "jobQueueName": "gpu",
        "jobQueueArn": f"arn:aws:batch:{REGION}:{ACCOUNT}:job-queue/gpu",
        "state": "ENABLED",
        "priority": 1,
        "computeEnvironmentOrder": [],
    }
    stub.add_response("describe_job_queues", {"jobQueues": [queue]})
    # (jobs listed RUNNING, jobs listed STARTING, described?) for three polls
    for running, starting, describe in ((["b-1"], [], "RUNNING"), (["b-1"], [], None), ([], ["b-1"], "STARTING")):
        for status, ids in (("RUNNING", running), ("STARTING", starting)):
            summaries = [{"jobId": i, "jobName": "render", "status": status} for i in ids]
            stub.add_response(
                "list_jobs", {"jobSummaryList": summaries}, {"jobQueue": "gpu", "maxResults": 100, "jobStatus": status}
            )
        if describe:
            stub.add_response("describe_jobs", {"jobs": [batch_job(describe)]}, {"jobs": ["b-1"]})
    stub.activate()
    config = aws_config(tmp_path, source={"batch": True})
    clients = {"aws-jobs": {"boto3_session": session, "aws:batch": batch, "aws:sts": sts(session)}}
    state = WatchState.new(config.guard)

    runs = [poll(config, store, clock, state, clients) for _ in range(3)]

    stub.assert_no_pending_responses()
    assert [r.poll.api_calls.get("batch:DescribeJobs", 0) for r in runs if r.poll] == [1, 0, 1]
    assert [r.estimates[0].record["state"] for r in runs] == ["RUNNING", "RUNNING", "STARTING"]
    hourly = 4 * 0.04048 + 8 * 0.004445
    assert runs[0].estimates[0].cost == pytest.approx(hourly * 2)


def test_a_platform_with_its_own_interval_is_polled_only_when_due(
    session: Any, store: Store, clock: FixedClock, tmp_path: Path
) -> None:
    glue, stub = stubbed(session, "glue")
    job = {"Name": "nightly", "Role": "r", "Command": {"Name": "glueetl"}, "WorkerType": "G.2X", "NumberOfWorkers": 10}
    run = {"Id": "jr_1", "JobName": "nightly", "JobRunState": "RUNNING", "StartedOn": NOW - timedelta(hours=1)}
    stub.add_response("get_jobs", {"Jobs": [job]}, {"MaxResults": 100})
    stub.add_response("get_job_runs", {"JobRuns": [run]}, {"JobName": "nightly", "MaxResults": 50})
    stub.add_response(
        "get_tags",
        {"Tags": {"owner": "gus@example.com"}},
        {"ResourceArn": f"arn:aws:glue:{REGION}:{ACCOUNT}:job/nightly"},
    )
    stub.add_response("get_job_runs", {"JobRuns": [run]}, {"JobName": "nightly", "MaxResults": 50})  # +5 min
    stub.activate()
    config = aws_config(
        tmp_path, source={"glue": True}, guard={"defaults": OFF, "platforms": {"glue": {"every": "5m"}}}
    )
    clients = {"aws-jobs": {"boto3_session": session, "aws:glue": glue, "aws:sts": sts(session)}}
    state = WatchState.new(config.guard)

    runs = [poll(config, store, clock, state, clients) for _ in range(6)]

    stub.assert_no_pending_responses()
    assert [r.poll.polled for r in runs if r.poll] == [["aws-jobs/glue"], [], [], [], [], ["aws-jobs/glue"]]
    assert all(len(r.estimates) == 1 for r in runs)  # the last sighting stands in between polls
    runtimes = [r.estimates[0].runtime for r in runs]
    assert runtimes[1] == timedelta(hours=1, minutes=1) and runtimes[4] == timedelta(hours=1, minutes=4)
    assert runs[0].estimates[0].cost == pytest.approx(20 * 0.44)  # 10 G.2X workers = 20 DPU for an hour


def test_a_denied_platform_is_a_problem_and_the_others_are_still_watched(
    moto_server: Any, session: Any, store: Store, clock: FixedClock, tmp_path: Path
) -> None:
    emr = boto3.client("emr", endpoint_url=moto_server.endpoint_url, region_name=REGION)
    emr_cluster(emr, "etl-a", "carol@example.com")
    clock.set(datetime.now(UTC) + timedelta(hours=1))
    glue, stub = stubbed(session, "glue")
    stub.add_client_error("get_jobs", "AccessDeniedException", "not allowed", http_status_code=400)
    stub.activate()
    config = aws_config(tmp_path, source={"emr": True, "glue": True}, endpoint=moto_server.endpoint_url)
    clients = {"aws-jobs": {"boto3_session": session, "aws:glue": glue}}

    run = run_guard(config, store, clock, clients, state=WatchState.new(config.guard))

    assert [e.platform for e in run.estimates] == ["emr"]
    [problem] = run.problems
    assert "glue" in problem and "glue:GetJobs" in problem
