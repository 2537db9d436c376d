"""Declared permissions ⊆ shipped policy / role; the runtime audit (conftest) checks every call ⊆ declared."""

from __future__ import annotations

from typing import Any

import pytest

from spendwatch.killswitch.base import ACTIONS
from tests.killswitch.conftest import aws_policy_actions, gcp_role_permissions, k8s_rbac_rules


@pytest.mark.parametrize("name", ACTIONS.names())
def test_declared_permissions_are_in_the_shipped_policy(name: str) -> None:
    action = ACTIONS.get(name)
    declared = set(action.permissions) | set(action.undo_permissions)
    assert declared, f"{name} declares no permission"
    shipped = {
        "aws": aws_policy_actions,
        "gcp": gcp_role_permissions,
        "kubernetes": lambda: k8s_rbac_rules("spendwatch-killswitch", "spendwatch-killswitch-pods"),
    }[action.provider]()
    assert declared <= shipped, f"{name}: {sorted(declared - shipped)} missing from the deploy/ policy"


def test_policy_grants_nothing_undeclared() -> None:
    declared = {
        p for _, a in ACTIONS.items() if a.provider != "kubernetes" for p in (*a.permissions, *a.undo_permissions)
    }
    assert aws_policy_actions() | gcp_role_permissions() == declared
    # Kubernetes: the kill switch's RBAC grants exactly what the Kubernetes actions declare.
    k8s = {p for _, a in ACTIONS.items() if a.provider == "kubernetes" for p in (*a.permissions, *a.undo_permissions)}
    assert k8s_rbac_rules("spendwatch-killswitch", "spendwatch-killswitch-pods") == k8s


DISABLE_BILLING_ONLY = {"billing.resourceAssociations.delete", "resourcemanager.projects.deleteBillingAssignment"}


def test_policy_never_grants_delete_create_or_run() -> None:
    for permission in (aws_policy_actions() | gcp_role_permissions()) - DISABLE_BILLING_ONLY:
        verb = permission.split(":")[-1].split(".")[-1].lower()
        assert not verb.startswith(("delete", "create", "put", "run", "terminateinstances")), permission


def test_the_audit_sees_real_calls(aws: Any, store: Any, ks_clock: Any, permission_audit: Any) -> None:
    """The runtime audit is not vacuous: a real run records the action's calls with the acting class."""
    from spendwatch.killswitch.aws import Ec2Stop
    from spendwatch.killswitch.engine import run_killswitch
    from tests.killswitch.factories import incident, rule, settings

    [vm] = [
        i["InstanceId"] for i in aws("ec2").run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)["Instances"]
    ]
    run_killswitch(settings([rule()], endpoint=aws.endpoint_url), store, ks_clock, incidents=[incident([vm])])
    assert (Ec2Stop, "ec2:DescribeInstances") in permission_audit.aws_calls
    assert (Ec2Stop, "ec2:StopInstances") in permission_audit.aws_calls
    assert all(acting is Ec2Stop for acting, _ in permission_audit.aws_calls)  # the test's own calls are not audited
