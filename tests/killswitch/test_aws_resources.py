"""AWS actions other than EC2, each against moto on 127.0.0.1 with real boto3, through the engine."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from spendwatch.killswitch.engine import KillSwitch, run_killswitch
from spendwatch.store import Store
from tests.doubles.waits import PATIENCE
from tests.killswitch.factories import ACCOUNT, REGION, incident, job, rule, settings


def _arn(service: str, resource: str) -> str:
    return f"arn:aws:{service}:{REGION}:{ACCOUNT}:{resource}"


def _run(
    aws: Any,
    store: Store,
    clock: Any,
    spec: dict[str, Any],
    *,
    resources: list[str] = (),  # type: ignore[assignment]
    jobs: list[Any] = (),
) -> Any:  # type: ignore[assignment]
    config = settings([spec], endpoint=aws.endpoint_url)
    run = run_killswitch(
        config, store, clock, incidents=[incident(list(resources))] if resources else [], jobs=list(jobs)
    )
    return config, run


# -- Auto Scaling ------------------------------------------------------------------------------


def _asg(aws: Any, name: str, sizes: tuple[int, int, int], tags: dict[str, str] | None = None) -> None:
    ec2 = aws("ec2")
    subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
    autoscaling = aws("autoscaling")
    autoscaling.create_launch_configuration(
        LaunchConfigurationName=f"lc-{name}", ImageId="ami-12c6146b", InstanceType="t3.micro"
    )
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName=name,
        LaunchConfigurationName=f"lc-{name}",
        MinSize=sizes[0],
        MaxSize=sizes[1],
        DesiredCapacity=sizes[2],
        VPCZoneIdentifier=subnet,
        Tags=[{"Key": k, "Value": v, "PropagateAtLaunch": False} for k, v in (tags or {}).items()],
    )


def _sizes(aws: Any, name: str) -> tuple[int, int, int]:
    group = aws("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0]
    return group["MinSize"], group["MaxSize"], group["DesiredCapacity"]


def test_asg_scale_to_zero_saves_sizes_and_undo_restores(aws: Any, store: Store, ks_clock: Any) -> None:
    _asg(aws, "web", (2, 6, 3), {"owner": "ops"})
    arn = _arn("autoscaling", "autoScalingGroup:0b1c:autoScalingGroupName/web")
    config, run = _run(aws, store, ks_clock, rule(do="scale-to-zero"), resources=[arn])

    [record] = run.executed
    assert _sizes(aws, "web") == (0, 0, 0)
    assert record.prior_state == {"state": "active", "MinSize": 2, "MaxSize": 6, "DesiredCapacity": 3}

    KillSwitch(config, store, ks_clock).undo(record.id, "ops")
    assert _sizes(aws, "web") == (2, 6, 3)


def test_asg_already_at_zero_is_skipped(aws: Any, store: Store, ks_clock: Any) -> None:
    _asg(aws, "idle", (0, 4, 0))
    arn = _arn("autoscaling", "autoScalingGroup:0b1c:autoScalingGroupName/idle")
    _, run = _run(aws, store, ks_clock, rule(do="scale-to-zero"), resources=[arn])
    assert not run.executed
    assert "state is scaled-to-zero" in run.skipped[0].reason


# -- RDS and Redshift --------------------------------------------------------------------------


def test_rds_stop_and_undo(aws: Any, store: Store, ks_clock: Any) -> None:
    rds = aws("rds")
    rds.create_db_instance(
        DBInstanceIdentifier="reports",
        DBInstanceClass="db.t3.micro",
        Engine="postgres",
        MasterUsername="admin",
        MasterUserPassword="secret123",
        AllocatedStorage=20,
        Tags=[{"Key": "owner", "Value": "bi"}],
    )
    config, run = _run(aws, store, ks_clock, rule(do="stop"), resources=[_arn("rds", "db:reports")])
    [record] = run.executed
    status = rds.describe_db_instances(DBInstanceIdentifier="reports")["DBInstances"][0]["DBInstanceStatus"]
    assert status == "stopped" and record.target.owner == "bi"
    KillSwitch(config, store, ks_clock).undo(record.id, "bi")
    status = rds.describe_db_instances(DBInstanceIdentifier="reports")["DBInstances"][0]["DBInstanceStatus"]
    assert status == "available"


def test_rds_protected_by_tag_is_not_stopped(aws: Any, store: Store, ks_clock: Any) -> None:
    rds = aws("rds")
    rds.create_db_instance(
        DBInstanceIdentifier="ledger",
        DBInstanceClass="db.t3.micro",
        Engine="postgres",
        MasterUsername="admin",
        MasterUserPassword="secret123",
        AllocatedStorage=20,
        Tags=[{"Key": "env", "Value": "production"}],
    )
    _, run = _run(aws, store, ks_clock, rule(do="stop"), resources=[_arn("rds", "db:ledger")])
    assert not run.executed and "env=production" in run.skipped[0].reason
    status = rds.describe_db_instances(DBInstanceIdentifier="ledger")["DBInstances"][0]["DBInstanceStatus"]
    assert status == "available"


def test_redshift_pause_and_resume(aws: Any, store: Store, ks_clock: Any) -> None:
    redshift = aws("redshift")
    redshift.create_cluster(
        ClusterIdentifier="dwh",
        NodeType="ra3.xlplus",
        MasterUsername="admin",
        MasterUserPassword="Secret123",
        ClusterType="single-node",
    )
    config, run = _run(aws, store, ks_clock, rule(do="pause"), resources=[_arn("redshift", "cluster:dwh")])
    [record] = run.executed
    assert redshift.describe_clusters(ClusterIdentifier="dwh")["Clusters"][0]["ClusterStatus"] == "paused"
    KillSwitch(config, store, ks_clock).undo(record.id, "bi")
    assert redshift.describe_clusters(ClusterIdentifier="dwh")["Clusters"][0]["ClusterStatus"] == "available"


# -- EMR ---------------------------------------------------------------------------------------


def _emr(aws: Any, *, protected: bool = False, task_nodes: int = 4) -> str:
    groups = [
        {"Name": "master", "InstanceRole": "MASTER", "InstanceType": "m5.xlarge", "InstanceCount": 1},
        {"Name": "core", "InstanceRole": "CORE", "InstanceType": "m5.xlarge", "InstanceCount": 2},
        {"Name": "task", "InstanceRole": "TASK", "InstanceType": "m5.xlarge", "InstanceCount": task_nodes},
    ]
    answer = aws("emr").run_job_flow(
        Name="etl",
        ReleaseLabel="emr-7.0.0",
        JobFlowRole="EMR_EC2_DefaultRole",
        ServiceRole="EMR_DefaultRole",
        Instances={"InstanceGroups": groups, "KeepJobFlowAliveWhenNoSteps": True, "TerminationProtected": protected},
    )
    return str(answer["JobFlowId"])


def _emr_state(aws: Any, cluster: str) -> str:
    return str(aws("emr").describe_cluster(ClusterId=cluster)["Cluster"]["Status"]["State"])


def test_emr_terminate_is_irreversible_so_enforce_waits_for_approval(aws: Any, store: Store, ks_clock: Any) -> None:
    cluster = _emr(aws)
    config, run = _run(aws, store, ks_clock, rule(do="terminate", how="approve"), resources=[cluster])
    [waiting] = run.awaiting_approval
    assert _emr_state(aws, cluster) == "WAITING"

    done = KillSwitch(config, store, ks_clock).approve(waiting.id, "lead")
    assert done.state == "done" and done.decided_by == "lead"
    assert _emr_state(aws, cluster) in ("TERMINATING", "TERMINATED")


def test_emr_terminate_in_enforce_with_allow_irreversible(aws: Any, store: Store, ks_clock: Any) -> None:
    cluster = _emr(aws)
    _, run = _run(aws, store, ks_clock, rule(do="terminate", allow_irreversible=True), resources=[cluster])
    assert len(run.executed) == 1
    assert _emr_state(aws, cluster) in ("TERMINATING", "TERMINATED")


def test_emr_termination_protection_is_respected(aws: Any, store: Store, ks_clock: Any) -> None:
    cluster = _emr(aws, protected=True)
    _, run = _run(aws, store, ks_clock, rule(do="terminate", allow_irreversible=True), resources=[cluster])
    assert not run.executed and run.skipped[0].reason == "termination protection is on"
    assert _emr_state(aws, cluster) == "WAITING"


def test_emr_shrink_task_groups_and_undo(aws: Any, store: Store, ks_clock: Any) -> None:
    cluster = _emr(aws, task_nodes=5)
    config, run = _run(aws, store, ks_clock, rule(do="shrink"), resources=[cluster])
    [record] = run.executed

    def counts() -> dict[str, int]:
        groups = aws("emr").list_instance_groups(ClusterId=cluster)["InstanceGroups"]
        return {g["InstanceGroupType"]: g["RequestedInstanceCount"] for g in groups}

    assert counts() == {"MASTER": 1, "CORE": 2, "TASK": 0}
    KillSwitch(config, store, ks_clock).undo(record.id, "data")
    assert counts() == {"MASTER": 1, "CORE": 2, "TASK": 5}


# -- Batch -------------------------------------------------------------------------------------


def _batch_queue(aws: Any, tags: dict[str, str] | None = None) -> tuple[str, str]:
    iam = aws("iam")
    role = iam.create_role(RoleName="batch", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    batch = aws("batch")
    env = batch.create_compute_environment(
        computeEnvironmentName="ce-main", type="UNMANAGED", state="ENABLED", serviceRole=role
    )["computeEnvironmentArn"]
    batch.create_job_queue(
        jobQueueName="queue-main",
        state="ENABLED",
        priority=1,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": env}],
        tags=tags or {},
    )
    definition = batch.register_job_definition(
        jobDefinitionName="train",
        type="container",
        containerProperties={"image": "busybox", "vcpus": 1, "memory": 128, "command": ["sleep", "600"]},
    )["jobDefinitionArn"]
    return "queue-main", definition


def test_batch_terminate_pending_job(aws: Any, store: Store, ks_clock: Any) -> None:
    queue, definition = _batch_queue(aws)
    batch = aws("batch")
    # A job waiting on a dependency that never finishes stays PENDING in moto: a live target.
    job_id = batch.submit_job(
        jobName="big", jobQueue=queue, jobDefinition=definition, dependsOn=[{"jobId": "never-finishes"}]
    )["jobId"]
    spec = rule(do="terminate", allow_irreversible=True, when={"job": {"platforms": ["batch"]}})
    _, run = _run(aws, store, ks_clock, spec, jobs=[job("batch", job_id)])
    [record] = run.executed
    assert record.target.resource_type == "batch-job"
    deadline = time.monotonic() + PATIENCE  # moto, like AWS, finishes a terminate asynchronously
    while batch.describe_jobs(jobs=[job_id])["jobs"][0]["status"] != "FAILED" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert batch.describe_jobs(jobs=[job_id])["jobs"][0]["status"] == "FAILED"


def test_batch_disable_queue_and_undo(aws: Any, store: Store, ks_clock: Any) -> None:
    queue, _ = _batch_queue(aws, {"owner": "ml"})
    config, run = _run(aws, store, ks_clock, rule(do="disable"), resources=[_arn("batch", f"job-queue/{queue}")])
    [record] = run.executed
    batch = aws("batch")
    assert batch.describe_job_queues(jobQueues=[queue])["jobQueues"][0]["state"] == "DISABLED"
    KillSwitch(config, store, ks_clock).undo(record.id, "ml")
    assert batch.describe_job_queues(jobQueues=[queue])["jobQueues"][0]["state"] == "ENABLED"


# -- Athena ------------------------------------------------------------------------------------


@pytest.fixture
def athena_stays_queued(aws: Any) -> Iterator[None]:
    """Make moto keep Athena queries QUEUED (as a long query would be) instead of finishing at once."""

    def post(path: str, body: dict[str, Any]) -> None:
        request = urllib.request.Request(f"{aws.endpoint_url}{path}", data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=PATIENCE) as response:
            response.read()

    post(
        "/moto-api/state-manager/set-transition",
        {"model_name": "athena::execution", "transition": {"progression": "manual", "times": 1000}},
    )
    yield
    post("/moto-api/state-manager/unset-transition", {"model_name": "athena::execution"})


def test_athena_cancel_running_query(aws: Any, store: Store, ks_clock: Any, athena_stays_queued: None) -> None:
    athena = aws("athena")
    query = athena.start_query_execution(
        QueryString="SELECT * FROM huge", ResultConfiguration={"OutputLocation": "s3://results/"}
    )["QueryExecutionId"]
    spec = rule(
        do="cancel", allow_irreversible=True, when={"job": {"platforms": ["athena"], "min_projected_cost": 100}}
    )
    _, run = _run(aws, store, ks_clock, spec, jobs=[job("athena", query, projected=250.0)])
    [record] = run.executed
    assert record.target.resource_type == "athena-query"
    assert athena.get_query_execution(QueryExecutionId=query)["QueryExecution"]["Status"]["State"] == "CANCELLED"


def test_athena_finished_query_is_skipped(aws: Any, store: Store, ks_clock: Any) -> None:
    athena = aws("athena")
    query = athena.start_query_execution(
        QueryString="SELECT 1", ResultConfiguration={"OutputLocation": "s3://results/"}
    )["QueryExecutionId"]
    athena.get_query_execution(QueryExecutionId=query)
    spec = rule(do="cancel", allow_irreversible=True, when={"job": {"platforms": ["athena"]}})
    _, run = _run(aws, store, ks_clock, spec, jobs=[job("athena", query)])
    assert not run.executed
    assert "state is SUCCEEDED" in run.skipped[0].reason
