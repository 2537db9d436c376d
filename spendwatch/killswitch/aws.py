"""AWS actions on long-lived resources: EC2, Auto Scaling, RDS, Redshift and EMR.

Every action re-reads its target (state + tags) with a ``Describe*`` call, acts with one call, and
— where it can — undoes with the opposite call using the snapshot journaled before it acted.
boto3 is imported only by ``ActionContext`` when a client is built, so loading the config stays fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from spendwatch.errors import ActionError
from spendwatch.killswitch.base import Action, Observed, Outcome, Target, register
from spendwatch.plugins import StrictModel

AWS_NOT_FOUND = frozenset(
    {
        "InvalidInstanceID.NotFound",
        "InvalidInstanceID.Malformed",
        "DBInstanceNotFound",
        "DBInstanceNotFoundFault",
        "ClusterNotFound",
        "ClusterNotFoundFault",
        "ResourceNotFoundException",
        "EntityNotFoundException",
    }
)


def error_code(exc: BaseException | None) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code") or "") or None
    return None


def call(client: Any, operation: str, target: Target, **params: Any) -> Any:
    """One AWS call; a refusal becomes an ``ActionError`` naming the operation, the target and the code."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return getattr(client, operation)(**params)
    except ClientError as exc:
        code = error_code(exc) or "Error"
        message = exc.response.get("Error", {}).get("Message", "") if hasattr(exc, "response") else str(exc)
        hint = " (the credentials lack this permission)" if "AccessDenied" in code or "Unauthorized" in code else ""
        raise ActionError(f"{operation} on {target.describe()} failed: {code}: {message}{hint}") from exc
    except BotoCoreError as exc:
        raise ActionError(f"{operation} on {target.describe()} failed: {exc}") from exc


def describe_or_none(client: Any, operation: str, target: Target, **params: Any) -> Any | None:
    """A describe call that returns ``None`` when the resource does not exist."""
    try:
        return call(client, operation, target, **params)
    except ActionError as exc:
        if (error_code(exc.__cause__) or "") in AWS_NOT_FOUND or "not found" in str(exc).lower():
            return None
        raise


def tag_dict(tags: list[dict[str, Any]] | None) -> dict[str, str]:
    return {str(t.get("Key")): str(t.get("Value", "")) for t in tags or [] if t.get("Key") is not None}


class AwsAction(Action):
    provider = "aws"
    service: str = ""

    def client(self, target: Target) -> Any:
        return self.context.aws_client(self.service, target)


# -- EC2 ---------------------------------------------------------------------------------------


class Ec2StopOptions(StrictModel):
    hibernate: bool = Field(default=False, description="hibernate instead of stop (instance must support it)")


@register("ec2-instance-stop")
class Ec2Stop(AwsAction):
    """Stop an EC2 instance (EBS stays); undo starts it. Dry-run asks EC2 itself (``DryRun=True``)."""

    service = "ec2"
    resource_type = "ec2-instance"
    verb = "stop"
    permissions = ("ec2:DescribeInstances", "ec2:StopInstances")
    undo_permissions = ("ec2:DescribeInstances", "ec2:StartInstances")
    valid_origin_states = frozenset({"pending", "running"})
    done_states = frozenset({"stopping", "stopped"})
    undone_states = frozenset({"pending", "running"})
    reversible = True
    native_dry_run = True
    options_model = Ec2StopOptions

    def describe(self, target: Target) -> Observed | None:
        answer = describe_or_none(self.client(target), "describe_instances", target, InstanceIds=[target.resource_id])
        instances = [i for r in (answer or {}).get("Reservations", []) for i in r.get("Instances", [])]
        if not instances:
            return None
        instance = instances[0]
        return Observed(
            state=str(instance["State"]["Name"]),
            labels=tag_dict(instance.get("Tags")),
            snapshot={"instance_type": instance.get("InstanceType")},
        )

    def dry_run(self, target: Target, observed: Observed) -> str:
        try:
            call(self.client(target), "stop_instances", target, InstanceIds=[target.resource_id], DryRun=True)
        except ActionError as exc:
            code = error_code(exc.__cause__)
            if code == "DryRunOperation":
                return f"EC2 dry-run: StopInstances on {target.resource_id} would succeed"
            return f"EC2 dry-run: StopInstances on {target.resource_id} would fail: {exc}"
        return f"EC2 dry-run: StopInstances on {target.resource_id} answered without a dry-run verdict"

    def execute(self, target: Target, observed: Observed) -> Outcome:
        hibernate = isinstance(self.options, Ec2StopOptions) and self.options.hibernate
        params: dict[str, Any] = {"InstanceIds": [target.resource_id]}
        if hibernate:
            params["Hibernate"] = True
        answer = call(self.client(target), "stop_instances", target, **params)
        change = (answer.get("StoppingInstances") or [{}])[0]
        now = change.get("CurrentState", {}).get("Name", "stopping")
        return Outcome(f"stopped {target.resource_id} ({observed.state} → {now})", {"state": now})

    def undo(self, target: Target, snapshot: Mapping[str, Any]) -> Outcome:
        answer = call(self.client(target), "start_instances", target, InstanceIds=[target.resource_id])
        change = (answer.get("StartingInstances") or [{}])[0]
        now = change.get("CurrentState", {}).get("Name", "pending")
        return Outcome(f"started {target.resource_id} again ({now})", {"state": now})


# -- Auto Scaling ------------------------------------------------------------------------------


@register("autoscaling-group-scale-to-zero")
class AsgScaleToZero(AwsAction):
    """Set min, max and desired capacity to 0 (so no policy scales it back); undo restores the saved sizes."""

    service = "autoscaling"
    resource_type = "autoscaling-group"
    verb = "scale-to-zero"
    permissions = ("autoscaling:DescribeAutoScalingGroups", "autoscaling:UpdateAutoScalingGroup")
    undo_permissions = permissions
    valid_origin_states = frozenset({"active"})
    done_states = frozenset({"scaled-to-zero"})
    undone_states = frozenset({"active"})
    reversible = True

    def describe(self, target: Target) -> Observed | None:
        answer = call(
            self.client(target), "describe_auto_scaling_groups", target, AutoScalingGroupNames=[target.resource_id]
        )
        groups = answer.get("AutoScalingGroups") or []
        if not groups:
            return None
        group = groups[0]
        sizes = {k: int(group[k]) for k in ("MinSize", "MaxSize", "DesiredCapacity")}
        if group.get("Status"):
            state = "deleting"
        else:
            state = "active" if sizes["DesiredCapacity"] > 0 or sizes["MinSize"] > 0 else "scaled-to-zero"
        return Observed(state=state, labels=tag_dict(group.get("Tags")), snapshot=sizes)

    def execute(self, target: Target, observed: Observed) -> Outcome:
        call(
            self.client(target),
            "update_auto_scaling_group",
            target,
            AutoScalingGroupName=target.resource_id,
            MinSize=0,
            MaxSize=0,
            DesiredCapacity=0,
        )
        before = dict(observed.snapshot)
        return Outcome(f"scaled {target.resource_id} to zero (was desired {before.get('DesiredCapacity')})", before)

    def undo(self, target: Target, snapshot: Mapping[str, Any]) -> Outcome:
        sizes = {k: int(snapshot[k]) for k in ("MinSize", "MaxSize", "DesiredCapacity")}
        call(self.client(target), "update_auto_scaling_group", target, AutoScalingGroupName=target.resource_id, **sizes)
        return Outcome(
            f"restored {target.resource_id} to min {sizes['MinSize']} / max {sizes['MaxSize']} / "
            f"desired {sizes['DesiredCapacity']}",
            sizes,
        )

    def is_undone(self, observed: Observed, snapshot: Mapping[str, Any]) -> bool:
        return all(observed.snapshot.get(k) == snapshot.get(k) for k in ("MinSize", "MaxSize", "DesiredCapacity"))


# -- RDS ---------------------------------------------------------------------------------------


@register("rds-instance-stop")
class RdsStop(AwsAction):
    """Stop an RDS DB instance; undo starts it. (AWS starts a stopped instance again after 7 days.)"""

    service = "rds"
    resource_type = "rds-instance"
    verb = "stop"
    permissions = ("rds:DescribeDBInstances", "rds:ListTagsForResource", "rds:StopDBInstance")
    undo_permissions = ("rds:DescribeDBInstances", "rds:StartDBInstance")
    valid_origin_states = frozenset({"available"})
    done_states = frozenset({"stopping", "stopped"})
    undone_states = frozenset({"starting", "available"})
    reversible = True

    def describe(self, target: Target) -> Observed | None:
        client = self.client(target)
        answer = describe_or_none(client, "describe_db_instances", target, DBInstanceIdentifier=target.resource_id)
        instances = (answer or {}).get("DBInstances") or []
        if not instances:
            return None
        db = instances[0]
        tags = db.get("TagList")
        if tags is None:
            tags = call(client, "list_tags_for_resource", target, ResourceName=db["DBInstanceArn"]).get("TagList")
        refusal = None
        if db.get("DBClusterIdentifier"):
            refusal = f"member of Aurora cluster {db['DBClusterIdentifier']}: instances of a cluster stop with it"
        return Observed(state=str(db["DBInstanceStatus"]), labels=tag_dict(tags), refusal=refusal)

    def execute(self, target: Target, observed: Observed) -> Outcome:
        answer = call(self.client(target), "stop_db_instance", target, DBInstanceIdentifier=target.resource_id)
        now = answer.get("DBInstance", {}).get("DBInstanceStatus", "stopping")
        return Outcome(f"stopped DB instance {target.resource_id} ({now})", {"state": now})

    def undo(self, target: Target, snapshot: Mapping[str, Any]) -> Outcome:
        answer = call(self.client(target), "start_db_instance", target, DBInstanceIdentifier=target.resource_id)
        now = answer.get("DBInstance", {}).get("DBInstanceStatus", "starting")
        return Outcome(f"started DB instance {target.resource_id} again ({now})", {"state": now})


# -- Redshift ----------------------------------------------------------------------------------


@register("redshift-cluster-pause")
class RedshiftPause(AwsAction):
    """Pause a provisioned Redshift cluster (compute billing stops); undo resumes it."""

    service = "redshift"
    resource_type = "redshift-cluster"
    verb = "pause"
    permissions = ("redshift:DescribeClusters", "redshift:PauseCluster")
    undo_permissions = ("redshift:DescribeClusters", "redshift:ResumeCluster")
    valid_origin_states = frozenset({"available"})
    done_states = frozenset({"pausing", "paused"})
    undone_states = frozenset({"resuming", "available"})
    reversible = True

    def describe(self, target: Target) -> Observed | None:
        answer = describe_or_none(
            self.client(target), "describe_clusters", target, ClusterIdentifier=target.resource_id
        )
        clusters = (answer or {}).get("Clusters") or []
        if not clusters:
            return None
        cluster = clusters[0]
        return Observed(state=str(cluster["ClusterStatus"]), labels=tag_dict(cluster.get("Tags")))

    def execute(self, target: Target, observed: Observed) -> Outcome:
        answer = call(self.client(target), "pause_cluster", target, ClusterIdentifier=target.resource_id)
        now = answer.get("Cluster", {}).get("ClusterStatus", "pausing")
        return Outcome(f"paused Redshift cluster {target.resource_id} ({now})", {"state": now})

    def undo(self, target: Target, snapshot: Mapping[str, Any]) -> Outcome:
        answer = call(self.client(target), "resume_cluster", target, ClusterIdentifier=target.resource_id)
        now = answer.get("Cluster", {}).get("ClusterStatus", "resuming")
        return Outcome(f"resumed Redshift cluster {target.resource_id} ({now})", {"state": now})


# -- EMR ---------------------------------------------------------------------------------------

EMR_ACTIVE = frozenset({"STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING"})


def _emr_cluster(action: AwsAction, target: Target) -> dict[str, Any] | None:
    answer = describe_or_none(action.client(target), "describe_cluster", target, ClusterId=target.resource_id)
    if answer is None:
        return None
    cluster: dict[str, Any] = answer["Cluster"]
    return cluster


@register("emr-cluster-terminate")
class EmrTerminate(AwsAction):
    """Terminate an EMR cluster. Irreversible: the cluster and its HDFS are gone."""

    service = "emr"
    resource_type = "emr-cluster"
    verb = "terminate"
    permissions = ("elasticmapreduce:DescribeCluster", "elasticmapreduce:TerminateJobFlows")
    valid_origin_states = EMR_ACTIVE
    done_states = frozenset({"TERMINATING", "TERMINATED", "TERMINATED_WITH_ERRORS"})
    reversible = False

    def describe(self, target: Target) -> Observed | None:
        cluster = _emr_cluster(self, target)
        if cluster is None:
            return None
        refusal = "termination protection is on" if cluster.get("TerminationProtected") else None
        return Observed(state=str(cluster["Status"]["State"]), labels=tag_dict(cluster.get("Tags")), refusal=refusal)

    def execute(self, target: Target, observed: Observed) -> Outcome:
        call(self.client(target), "terminate_job_flows", target, JobFlowIds=[target.resource_id])
        return Outcome(f"terminated EMR cluster {target.resource_id}", {"state": "TERMINATING"})


@register("emr-cluster-shrink")
class EmrShrink(AwsAction):
    """Resize an EMR cluster's TASK instance groups to 0 (core nodes hold HDFS and stay); undo restores them."""

    service = "emr"
    resource_type = "emr-cluster"
    verb = "shrink"
    permissions = (
        "elasticmapreduce:DescribeCluster",
        "elasticmapreduce:ListInstanceGroups",
        "elasticmapreduce:ModifyInstanceGroups",
    )
    undo_permissions = permissions
    valid_origin_states = frozenset({"RUNNING", "WAITING"})
    done_states = frozenset({"shrunk"})
    reversible = True

    def describe(self, target: Target) -> Observed | None:
        cluster = _emr_cluster(self, target)
        if cluster is None:
            return None
        labels = tag_dict(cluster.get("Tags"))
        if cluster.get("InstanceCollectionType") == "INSTANCE_FLEET":
            return Observed(
                state=str(cluster["Status"]["State"]),
                labels=labels,
                refusal="uses instance fleets; shrink resizes instance groups only",
            )
        answer = call(self.client(target), "list_instance_groups", target, ClusterId=target.resource_id)
        tasks = {
            g["Id"]: int(g.get("RequestedInstanceCount", 0))
            for g in answer.get("InstanceGroups", [])
            if g.get("InstanceGroupType") == "TASK"
        }
        state = str(cluster["Status"]["State"])
        if state in self.valid_origin_states and not any(tasks.values()):
            state = "shrunk"
        return Observed(state=state, labels=labels, snapshot={"task_groups": tasks})

    def execute(self, target: Target, observed: Observed) -> Outcome:
        groups: dict[str, int] = dict(observed.snapshot.get("task_groups") or {})
        resize = [{"InstanceGroupId": gid, "InstanceCount": 0} for gid, count in groups.items() if count > 0]
        call(self.client(target), "modify_instance_groups", target, ClusterId=target.resource_id, InstanceGroups=resize)
        return Outcome(f"shrank {len(resize)} task group(s) of {target.resource_id} to 0", {"task_groups": groups})

    def undo(self, target: Target, snapshot: Mapping[str, Any]) -> Outcome:
        groups: dict[str, int] = dict(snapshot.get("task_groups") or {})
        resize = [{"InstanceGroupId": gid, "InstanceCount": count} for gid, count in groups.items() if count > 0]
        call(self.client(target), "modify_instance_groups", target, ClusterId=target.resource_id, InstanceGroups=resize)
        return Outcome(f"restored {len(resize)} task group(s) of {target.resource_id}", {"task_groups": groups})

    def took_effect(self, observed: Observed) -> bool:
        return observed.state == "shrunk"

    def is_undone(self, observed: Observed, snapshot: Mapping[str, Any]) -> bool:
        wanted: dict[str, int] = dict(snapshot.get("task_groups") or {})
        return dict(observed.snapshot.get("task_groups") or {}) == wanted


AWS_ACTIONS: tuple[type[Action], ...] = (Ec2Stop, AsgScaleToZero, RdsStop, RedshiftPause, EmrTerminate, EmrShrink)
