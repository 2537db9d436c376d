"""AWS answers moto does not give: ``iam:SimulatePrincipalPolicy``, and chosen error responses.

moto (5.x) stores IAM roles, users and policies but does not implement the policy simulator. The
``IamPolicySimulator`` answers ``SimulatePrincipalPolicy`` for the clients of one boto3 session by
reading the principal's policies FROM the moto server (inline and attached managed policies, so a test
sets IAM up with ordinary IAM calls) and evaluating them the way IAM does for the default resource
``*``: an explicit Deny wins, an Allow statement whose ``Resource`` covers ``*`` allows, a statement
with a ``Condition`` cannot be decided without context and reports its keys as
``MissingContextValues`` (as the real simulator does). Requests are validated by botocore against the
real service model before they reach the hook, and every answer is validated against the model's
output shape — like botocore's ``Stubber``, on which the hook mechanism is modelled.

``fail_with(session, service, operation, code, status)`` makes one operation answer with an AWS error
(e.g. ``AccessDeniedException``) for a session's clients.
"""

from __future__ import annotations

import fnmatch
from typing import Any

import boto3
from botocore.awsrequest import AWSResponse
from botocore.validate import validate_parameters


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


class IamPolicySimulator:
    def __init__(self, endpoint_url: str) -> None:
        self.endpoint_url = endpoint_url
        self.calls: list[dict[str, Any]] = []

    def install(self, session: boto3.Session) -> None:
        """Answer SimulatePrincipalPolicy for clients created from ``session`` from now on."""
        session.events.register("before-parameter-build.iam.SimulatePrincipalPolicy", self._capture)
        session.events.register("before-call.iam.SimulatePrincipalPolicy", self._answer)

    def _capture(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["simulate_params"] = dict(params)

    def _answer(self, model: Any, context: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        params = context["simulate_params"]
        self.calls.append(params)
        statements = self.statements(params["PolicySourceArn"])
        results = [self.evaluate(statements, action) for action in params["ActionNames"]]
        response: dict[str, Any] = {"EvaluationResults": results, "IsTruncated": False}
        validate_parameters(response, model.output_shape)
        return AWSResponse(None, 200, {}, None), response

    def statements(self, principal_arn: str) -> list[dict[str, Any]]:
        iam = boto3.client("iam", endpoint_url=self.endpoint_url, region_name="us-east-1")
        kind, _, name = principal_arn.split(":", 5)[5].partition("/")
        name = name.rsplit("/", 1)[-1]
        documents: list[dict[str, Any]] = []
        if kind == "role":
            for policy in iam.list_role_policies(RoleName=name)["PolicyNames"]:
                documents.append(iam.get_role_policy(RoleName=name, PolicyName=policy)["PolicyDocument"])
            attached = iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]
        elif kind == "user":
            for policy in iam.list_user_policies(UserName=name)["PolicyNames"]:
                documents.append(iam.get_user_policy(UserName=name, PolicyName=policy)["PolicyDocument"])
            attached = iam.list_attached_user_policies(UserName=name)["AttachedPolicies"]
        else:
            raise AssertionError(f"the simulator double knows roles and users, not {principal_arn}")
        for policy in attached:
            version = iam.get_policy(PolicyArn=policy["PolicyArn"])["Policy"]["DefaultVersionId"]
            documents.append(
                iam.get_policy_version(PolicyArn=policy["PolicyArn"], VersionId=version)["PolicyVersion"]["Document"]
            )
        return [s for doc in documents for s in _as_list(doc["Statement"])]

    @staticmethod
    def evaluate(statements: list[dict[str, Any]], action: str) -> dict[str, Any]:
        decision = "implicitDeny"
        missing: set[str] = set()
        for statement in statements:
            if not _action_matches(statement, action) or not _covers_everything(statement):
                continue
            if statement.get("Condition"):
                for operator in statement["Condition"].values():
                    missing |= set(operator)
                continue
            if statement["Effect"] == "Deny":
                decision = "explicitDeny"
                break
            decision = "allowed"
        result: dict[str, Any] = {"EvalActionName": action, "EvalResourceName": "*", "EvalDecision": decision}
        if decision != "allowed" and missing:
            result["MissingContextValues"] = sorted(missing)
        return result


def _action_matches(statement: dict[str, Any], action: str) -> bool:
    if "NotAction" in statement:
        return not any(fnmatch.fnmatch(action.lower(), p.lower()) for p in _as_list(statement["NotAction"]))
    return any(fnmatch.fnmatch(action.lower(), p.lower()) for p in _as_list(statement.get("Action", [])))


def _covers_everything(statement: dict[str, Any]) -> bool:
    return "*" in _as_list(statement.get("Resource", []))


def fail_with(session: boto3.Session, service: str, operation: str, code: str, status: int = 400) -> None:
    """Make ``operation`` answer with the AWS error ``code`` for clients created from ``session``."""

    def answer(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        parsed = {
            "Error": {"Code": code, "Message": f"{code} (test double)"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        }
        return AWSResponse(None, status, {}, None), parsed

    session.events.register(f"before-call.{service}.{operation}", answer)
