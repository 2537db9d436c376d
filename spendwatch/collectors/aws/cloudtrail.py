"""Who started a job, from CloudTrail ``LookupEvents`` — when tags do not say.

``LookupEvents`` allows 2 requests per second per account and region, so lookups go through a token
bucket (``rate`` per second, injectable clock and sleep) and each job is looked up once: a job whose
owner is already in the store is skipped. The event is found by name (``StartQueryExecution``,
``CreateTrainingJob`` …) in a window around the job's start, and matched on the job id in the
event's request or response; the person is CloudTrail's ``Username`` (the IAM user, or the session
name of an assumed role — usually the person's login with SSO).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from spendwatch.collectors.aws.api import AwsApi

EVENTS = {
    "athena": ("StartQueryExecution", "queryExecutionId"),
    "sagemaker-training": ("CreateTrainingJob", "trainingJobName"),
    "sagemaker-processing": ("CreateProcessingJob", "processingJobName"),
    "sagemaker-transform": ("CreateTransformJob", "transformJobName"),
    "emr": ("RunJobFlow", "jobFlowId"),
    "glue": ("StartJobRun", "jobRunId"),
    "batch": ("SubmitJob", "jobId"),
}


class TokenBucket:
    def __init__(
        self, rate: float, *, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self.rate = rate
        self.clock = clock
        self.sleep = sleep
        self.tokens = rate
        self.updated = clock()

    def take(self) -> None:
        now = self.clock()
        self.tokens = min(self.rate, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < 1:
            wait = (1 - self.tokens) / self.rate
            self.sleep(wait)
            self.updated = self.clock()
            self.tokens = 1
        self.tokens -= 1


class OwnerLookup:
    """Finds the principal behind a job in CloudTrail, rate-limited, at most ``max_lookups`` per run."""

    def __init__(
        self, api: AwsApi, bucket: TokenBucket, *, max_lookups: int = 50, window: timedelta = timedelta(minutes=15)
    ) -> None:
        self.api = api
        self.bucket = bucket
        self.max_lookups = max_lookups
        self.window = window
        self.lookups = 0

    def find(self, kind: str, job_id: str, started: datetime | None, region: str) -> str | None:
        if kind not in EVENTS or started is None or self.lookups >= self.max_lookups:
            return None
        event_name, id_field = EVENTS[kind]
        client = self.api.client("cloudtrail", region=region)
        token: str | None = None
        for _ in range(5):  # a busy account: at most five pages around the start
            self.bucket.take()
            self.lookups += 1
            params: dict[str, Any] = {
                "LookupAttributes": [{"AttributeKey": "EventName", "AttributeValue": event_name}],
                "StartTime": started - self.window,
                "EndTime": started + self.window,
                "MaxResults": 50,
            }
            if token:
                params["NextToken"] = token
            answer = self.api.call(client, "LookupEvents", **params)
            for event in answer.get("Events", []):
                if _mentions(event, id_field, job_id):
                    return _principal(event)
            token = answer.get("NextToken")
            if not token:
                return None
        return None


def _mentions(event: dict[str, Any], field: str, job_id: str) -> bool:
    try:
        detail = json.loads(event.get("CloudTrailEvent") or "{}")
    except json.JSONDecodeError:
        return False
    for part in ("responseElements", "requestParameters"):
        values = detail.get(part) or {}
        if isinstance(values, dict) and str(values.get(field, "")) == job_id:
            return True
    return False


def _principal(event: dict[str, Any]) -> str | None:
    name = event.get("Username")
    if name:
        return str(name)
    try:
        identity = json.loads(event.get("CloudTrailEvent") or "{}").get("userIdentity", {})
    except json.JSONDecodeError:
        return None
    arn = str(identity.get("arn") or "")
    return arn.rsplit("/", 1)[-1] or None
