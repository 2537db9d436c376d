"""AWS actions on jobs and notebooks: SageMaker, Athena, Glue and Batch.

Stopping a job is irreversible (a stopped training job or query cannot be resumed, only re-run), so
these never run in ``enforce`` mode unless the rule says ``allow_irreversible: true``; a SageMaker
notebook instance and a Batch job queue are the reversible exceptions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from spendwatch.errors import ActionError
from spendwatch.killswitch.aws import AwsAction, call, describe_or_none, tag_dict
from spendwatch.killswitch.base import Action, Observed, Outcome, Target, register

# -- SageMaker ---------------------------------------------------------------------------------


class SageMakerJobStop(AwsAction):
    """Stop a SageMaker job (training, processing, transform): one ``Stop*`` call after a ``Describe*``."""

    service = "sagemaker"
    verb = "stop"
    valid_origin_states = frozenset({"InProgress"})
    done_states = frozenset({"Stopping", "Stopped"})
    reversible = False
    kind = ""  # TrainingJob | ProcessingJob | TransformJob

    @property
    def _snake(self) -> str:
        return {"TrainingJob": "training_job", "ProcessingJob": "processing_job", "TransformJob": "transform_job"}[
            self.kind
        ]

    def describe(self, target: Target) -> Observed | None:
        client = self.client(target)
        answer = describe_or_none(client, f"describe_{self._snake}", target, **{f"{self.kind}Name": target.resource_id})
        if answer is None:
            return None
        tags = call(client, "list_tags", target, ResourceArn=answer[f"{self.kind}Arn"]).get("Tags")
        return Observed(state=str(answer[f"{self.kind}Status"]), labels=tag_dict(tags))

    def execute(self, target: Target, observed: Observed) -> Outcome:
        call(self.client(target), f"stop_{self._snake}", target, **{f"{self.kind}Name": target.resource_id})
        return Outcome(f"stopped SageMaker {self._snake.replace('_', ' ')} {target.resource_id}", {"state": "Stopping"})


@register("sagemaker-training-job-stop")
class SageMakerTrainingStop(SageMakerJobStop):
    resource_type = "sagemaker-training-job"
    kind = "TrainingJob"
    permissions = ("sagemaker:DescribeTrainingJob", "sagemaker:ListTags", "sagemaker:StopTrainingJob")


@register("sagemaker-processing-job-stop")
class SageMakerProcessingStop(SageMakerJobStop):
    resource_type = "sagemaker-processing-job"
    kind = "ProcessingJob"
    permissions = ("sagemaker:DescribeProcessingJob", "sagemaker:ListTags", "sagemaker:StopProcessingJob")


@register("sagemaker-transform-job-stop")
class SageMakerTransformStop(SageMakerJobStop):
    resource_type = "sagemaker-transform-job"
    kind = "TransformJob"
    permissions = ("sagemaker:DescribeTransformJob", "sagemaker:ListTags", "sagemaker:StopTransformJob")


@register("sagemaker-notebook-instance-stop")
class SageMakerNotebookStop(AwsAction):
    """Stop a notebook instance (its ML storage volume stays); undo starts it."""

    service = "sagemaker"
    resource_type = "sagemaker-notebook-instance"
    verb = "stop"
    permissions = ("sagemaker:DescribeNotebookInstance", "sagemaker:ListTags", "sagemaker:StopNotebookInstance")
    undo_permissions = ("sagemaker:DescribeNotebookInstance", "sagemaker:StartNotebookInstance")
    valid_origin_states = frozenset({"InService"})
    done_states = frozenset({"Stopping", "Stopped"})
    undone_states = frozenset({"Pending", "InService"})
    reversible = True

    def describe(self, target: Target) -> Observed | None:
        client = self.client(target)
        answer = describe_or_none(client, "describe_notebook_instance", target, NotebookInstanceName=target.resource_id)
        if answer is None:
            return None
        tags = call(client, "list_tags", target, ResourceArn=answer["NotebookInstanceArn"]).get("Tags")
        return Observed(state=str(answer["NotebookInstanceStatus"]), labels=tag_dict(tags))

    def execute(self, target: Target, observed: Observed) -> Outcome:
        call(self.client(target), "stop_notebook_instance", target, NotebookInstanceName=target.resource_id)
        return Outcome(f"stopped notebook instance {target.resource_id}", {"state": "Stopping"})

    def undo(self, target: Target, snapshot: Mapping[str, Any]) -> Outcome:
        call(self.client(target), "start_notebook_instance", target, NotebookInstanceName=target.resource_id)
        return Outcome(f"started notebook instance {target.resource_id} again", {"state": "Pending"})


# -- Athena ------------------------------------------------------------------------------------


@register("athena-query-cancel")
class AthenaCancel(AwsAction):
    """Stop a running Athena query (``StopQueryExecution``); what it scanned so far is still billed."""

    service = "athena"
    resource_type = "athena-query"
    verb = "cancel"
    permissions = ("athena:GetQueryExecution", "athena:StopQueryExecution")
    valid_origin_states = frozenset({"QUEUED", "RUNNING"})
    done_states = frozenset({"CANCELLED"})
    reversible = False

    def describe(self, target: Target) -> Observed | None:
        try:
            answer = call(self.client(target), "get_query_execution", target, QueryExecutionId=target.resource_id)
        except ActionError as exc:
            if "InvalidRequestException" in str(exc) and "not found" in str(exc).lower():
                return None
            raise
        execution = answer["QueryExecution"]
        return Observed(
            state=str(execution["Status"]["State"]),
            snapshot={"workgroup": execution.get("WorkGroup")},
        )

    def execute(self, target: Target, observed: Observed) -> Outcome:
        call(self.client(target), "stop_query_execution", target, QueryExecutionId=target.resource_id)
        return Outcome(f"cancelled Athena query {target.resource_id}", {"state": "CANCELLED"})


# -- Glue --------------------------------------------------------------------------------------


def _glue_ids(target: Target) -> tuple[str, str]:
    job, sep, run = target.resource_id.rpartition("/")
    if not sep or not job or not run:
        raise ActionError(f"glue-job-run id {target.resource_id!r} is not '<job name>/<run id>'")
    return job, run


@register("glue-job-run-stop")
class GlueStop(AwsAction):
    """Stop a Glue job run (``BatchStopJobRun``); the job's tags are read for protection."""

    service = "glue"
    resource_type = "glue-job-run"
    verb = "stop"
    permissions = ("glue:GetJobRun", "glue:GetTags", "glue:BatchStopJobRun")
    valid_origin_states = frozenset({"STARTING", "RUNNING", "WAITING"})
    done_states = frozenset({"STOPPING", "STOPPED"})
    reversible = False

    def describe(self, target: Target) -> Observed | None:
        job, run = _glue_ids(target)
        client = self.client(target)
        answer = describe_or_none(client, "get_job_run", target, JobName=job, RunId=run)
        if answer is None:
            return None
        labels: dict[str, str] = {}
        if target.account and target.region:
            arn = f"arn:aws:glue:{target.region}:{target.account}:job/{job}"
            labels = dict(call(client, "get_tags", target, ResourceArn=arn).get("Tags") or {})
        return Observed(state=str(answer["JobRun"]["JobRunState"]), labels=labels)

    def execute(self, target: Target, observed: Observed) -> Outcome:
        job, run = _glue_ids(target)
        answer = call(self.client(target), "batch_stop_job_run", target, JobName=job, JobRunIds=[run])
        errors = answer.get("Errors") or []
        if errors:
            detail = errors[0].get("ErrorDetail", {})
            raise ActionError(
                f"batch_stop_job_run on {target.describe()} failed: "
                f"{detail.get('ErrorCode', 'Error')}: {detail.get('ErrorMessage', '')}"
            )
        return Outcome(f"stopped Glue run {run} of job {job}", {"state": "STOPPING"})


# -- Batch -------------------------------------------------------------------------------------


@register("batch-job-terminate")
class BatchTerminate(AwsAction):
    """Terminate an AWS Batch job (queued ones are cancelled, running ones killed). Irreversible."""

    service = "batch"
    resource_type = "batch-job"
    verb = "terminate"
    permissions = ("batch:DescribeJobs", "batch:TerminateJob")
    valid_origin_states = frozenset({"SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING"})
    done_states = frozenset({"FAILED"})
    reversible = False

    def describe(self, target: Target) -> Observed | None:
        answer = call(self.client(target), "describe_jobs", target, jobs=[target.resource_id])
        jobs = answer.get("jobs") or []
        if not jobs:
            return None
        job = jobs[0]
        return Observed(state=str(job["status"]), labels=dict(job.get("tags") or {}))

    def execute(self, target: Target, observed: Observed) -> Outcome:
        reason = f"spendwatch kill switch: {target.describe()}"[:255]
        call(self.client(target), "terminate_job", target, jobId=target.resource_id, reason=reason)
        return Outcome(f"terminated Batch job {target.resource_id}", {"state": "FAILED"})


@register("batch-job-queue-disable")
class BatchQueueDisable(AwsAction):
    """Disable a Batch job queue: running jobs finish, nothing new is scheduled. Undo enables it."""

    service = "batch"
    resource_type = "batch-job-queue"
    verb = "disable"
    permissions = ("batch:DescribeJobQueues", "batch:UpdateJobQueue")
    undo_permissions = permissions
    valid_origin_states = frozenset({"ENABLED"})
    done_states = frozenset({"DISABLED"})
    undone_states = frozenset({"ENABLED"})
    reversible = True

    def describe(self, target: Target) -> Observed | None:
        answer = call(self.client(target), "describe_job_queues", target, jobQueues=[target.resource_id])
        queues = answer.get("jobQueues") or []
        if not queues:
            return None
        queue = queues[0]
        return Observed(state=str(queue["state"]), labels=dict(queue.get("tags") or {}))

    def execute(self, target: Target, observed: Observed) -> Outcome:
        call(self.client(target), "update_job_queue", target, jobQueue=target.resource_id, state="DISABLED")
        return Outcome(f"disabled Batch job queue {target.resource_id}", {"state": "DISABLED"})

    def undo(self, target: Target, snapshot: Mapping[str, Any]) -> Outcome:
        call(self.client(target), "update_job_queue", target, jobQueue=target.resource_id, state="ENABLED")
        return Outcome(f"enabled Batch job queue {target.resource_id} again", {"state": "ENABLED"})


AWS_JOB_ACTIONS: tuple[type[Action], ...] = (
    SageMakerTrainingStop,
    SageMakerProcessingStop,
    SageMakerTransformStop,
    SageMakerNotebookStop,
    AthenaCancel,
    GlueStop,
    BatchTerminate,
    BatchQueueDisable,
)
