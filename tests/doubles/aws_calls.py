"""Record every AWS API call a test makes, and check each against the shipped IAM policy.

``RecordingSession`` is a real ``boto3.Session`` with a botocore ``before-parameter-build`` hook: it fires
for every operation of every client made from the session (moto-backed or stubbed alike), before the
request is built, so even a call that fails is recorded.
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

from spendwatch.collectors.aws.api import iam_action

POLICY = Path(__file__).resolve().parents[2] / "deploy" / "aws" / "collector-policy.json"


class CallLog:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def hook(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.calls.append((model.service_model.service_name, model.name, dict(params)))

    @property
    def actions(self) -> set[str]:
        return {iam_action(service, operation) for service, operation, _ in self.calls}

    def operations(self, service: str, operation: str) -> list[dict[str, Any]]:
        return [params for s, o, params in self.calls if s == service and o == operation]


def recording_session(log: CallLog, region: str = "us-east-1") -> Any:
    import boto3

    session = boto3.Session(region_name=region)
    session.events.register("before-parameter-build.*.*", log.hook)
    return session


def allowed_actions(policy_path: Path = POLICY) -> list[str]:
    """Every ``Action`` pattern of the policy's Allow statements (``Resource`` is checked by review)."""
    document = json.loads(policy_path.read_text(encoding="utf-8"))
    patterns: list[str] = []
    for statement in document["Statement"]:
        if statement.get("Effect") != "Allow":
            continue
        actions = statement["Action"]
        patterns.extend([actions] if isinstance(actions, str) else actions)
    return patterns


def denied(actions: set[str], policy_path: Path = POLICY) -> set[str]:
    """The actions no Allow statement of the policy grants (IAM action names are case-insensitive)."""
    patterns = [p.lower() for p in allowed_actions(policy_path)]
    return {a for a in actions if not any(fnmatch.fnmatchcase(a.lower(), p) for p in patterns)}
