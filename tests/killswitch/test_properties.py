"""Properties over random estates and rules (hypothesis), on moto with real boto3.

* a protected resource is never acted on;
* dry-run changes nothing;
* the caps hold;
* undo after enforce restores every prior state (instance states, Auto Scaling sizes).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import boto3
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from spendwatch.killswitch.engine import KillSwitch, run_killswitch
from spendwatch.killswitch.journal import list_actions
from tests.doubles.clock import FixedClock
from tests.killswitch.factories import ACCOUNT, NOW, REGION, incident, new_store, rule, settings

TAGS = st.sampled_from(
    [
        {},
        {"owner": "ana"},
        {"spendwatch:protect": "true"},
        {"spendwatch:protect": "TRUE"},
        {"spendwatch:protect": "false"},
        {"env": "prod"},
        {"env": "dev"},
        {"team": "ml", "env": "production"},
    ]
)
ESTATE = st.fixed_dictionaries(
    {
        "instances": st.lists(TAGS, min_size=1, max_size=5),
        "groups": st.lists(st.tuples(st.integers(0, 3), st.integers(0, 4), TAGS), max_size=2),
    }
)
RULES = st.fixed_dictionaries(
    {
        "how": st.sampled_from(["dry-run", "approve", "enforce"]),
        "per_run": st.integers(0, 4),
        "per_hour": st.integers(0, 6),
    }
)
PROTECTED = {("spendwatch:protect", "true"), ("env", "prod"), ("env", "production")}
SLOW = hyp_settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


_CLIENTS: dict[tuple[str, str], Any] = {}


def _client(service: str, endpoint: str) -> Any:
    """One client per service for the whole module: building a botocore client parses its model (slow)."""
    key = (service, endpoint)
    if key not in _CLIENTS:
        _CLIENTS[key] = boto3.Session(region_name=REGION).client(service, endpoint_url=endpoint)
    return _CLIENTS[key]


def _clients(endpoint: str) -> dict[str, Any]:
    return {"aws:ec2": _client("ec2", endpoint), "aws:autoscaling": _client("autoscaling", endpoint)}


def _protected(tags: dict[str, str]) -> bool:
    return any((k, v.lower()) in PROTECTED for k, v in tags.items())


def _build(endpoint: str, estate: dict[str, Any]) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    ec2 = _client("ec2", endpoint)
    instances = {}
    for tags in estate["instances"]:
        spec: dict[str, Any] = {"ImageId": "ami-12c6146b", "MinCount": 1, "MaxCount": 1}
        if tags:
            spec["TagSpecifications"] = [
                {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
            ]
        instances[ec2.run_instances(**spec)["Instances"][0]["InstanceId"]] = tags
    autoscaling = _client("autoscaling", endpoint)
    groups = {}
    if estate["groups"]:
        subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
        autoscaling.create_launch_configuration(
            LaunchConfigurationName="lc", ImageId="ami-12c6146b", InstanceType="t3.micro"
        )
    for n, (low, extra, tags) in enumerate(estate["groups"]):
        name = f"asg-{n}"
        autoscaling.create_auto_scaling_group(
            AutoScalingGroupName=name,
            LaunchConfigurationName="lc",
            MinSize=low,
            MaxSize=low + extra + 1,
            DesiredCapacity=low + extra,
            VPCZoneIdentifier=subnet,
            Tags=[{"Key": k, "Value": v, "PropagateAtLaunch": False} for k, v in tags.items()],
        )
        groups[name] = tags
    return instances, groups


def _snapshot(endpoint: str, instances: dict[str, Any]) -> dict[str, Any]:
    """States of the estate's own instances (Auto Scaling replaces its instances) and the groups' sizes."""
    ec2 = _client("ec2", endpoint)
    states = {
        i["InstanceId"]: i["State"]["Name"]
        for r in ec2.describe_instances(InstanceIds=list(instances))["Reservations"]
        for i in r["Instances"]
    }
    groups = _client("autoscaling", endpoint).describe_auto_scaling_groups()["AutoScalingGroups"]
    sizes = {g["AutoScalingGroupName"]: (g["MinSize"], g["MaxSize"], g["DesiredCapacity"]) for g in groups}
    return {"instances": states, "groups": sizes}


def _resources(instances: dict[str, Any], groups: dict[str, Any]) -> list[str]:
    asg = [f"arn:aws:autoscaling:{REGION}:{ACCOUNT}:autoScalingGroup:x:autoScalingGroupName/{g}" for g in groups]
    return [*instances, *asg]


def _rules(how: str) -> list[dict[str, Any]]:
    return [rule("stop-vms", do="stop", how=how), rule("drain-asg", do="scale-to-zero", how=how)]


@SLOW
@given(estate=ESTATE, choice=RULES)
def test_protection_dry_run_and_caps(moto_server: Any, estate: dict[str, Any], choice: dict[str, Any]) -> None:
    moto_server.reset()
    endpoint = moto_server.endpoint_url
    instances, groups = _build(endpoint, estate)
    before = _snapshot(endpoint, instances)
    config = settings(
        _rules(choice["how"]),
        endpoint=endpoint,
        caps={"max_actions_per_run": choice["per_run"], "max_actions_per_hour": choice["per_hour"]},
    )
    clock = FixedClock(NOW)
    with tempfile.TemporaryDirectory() as folder:
        store = new_store(Path(folder), clock)
        run = run_killswitch(
            config, store, clock, incidents=[incident(_resources(instances, groups))], clients=_clients(endpoint)
        )
        after = _snapshot(endpoint, instances)
        touched = {a.target.resource_id for a in list_actions(store) if a.state in ("running", "done", "failed")}

    for instance, tags in instances.items():
        if _protected(tags):
            assert after["instances"][instance] == before["instances"][instance]
            assert instance not in touched
    for group, tags in groups.items():
        if _protected(tags):
            assert after["groups"][group] == before["groups"][group]
            assert group not in touched
    if choice["how"] != "enforce":
        assert after == before and not run.executed
    assert len(run.executed) <= min(choice["per_run"], choice["per_hour"])
    changed = [i for i in instances if after["instances"][i] != before["instances"][i]]
    changed += [g for g in groups if after["groups"][g] != before["groups"][g]]
    assert len(changed) == len(run.executed)


@SLOW
@given(estate=ESTATE)
def test_undo_after_enforce_restores_prior_states(moto_server: Any, estate: dict[str, Any]) -> None:
    moto_server.reset()
    endpoint = moto_server.endpoint_url
    instances, groups = _build(endpoint, estate)
    before = _snapshot(endpoint, instances)
    config = settings(
        _rules("enforce"), endpoint=endpoint, caps={"max_actions_per_run": 20, "max_actions_per_hour": 20}
    )
    clock = FixedClock(NOW)
    with tempfile.TemporaryDirectory() as folder:
        store = new_store(Path(folder), clock)
        run = run_killswitch(
            config, store, clock, incidents=[incident(_resources(instances, groups))], clients=_clients(endpoint)
        )
        engine = KillSwitch(config, store, clock, clients=_clients(endpoint))
        for record in run.executed:
            engine.undo(record.id, "prop")
        assert all(a.state != "done" for a in list_actions(store))
    after = _snapshot(endpoint, instances)
    assert after["groups"] == before["groups"]
    assert {i: s in ("pending", "running") for i, s in after["instances"].items()} == dict.fromkeys(
        before["instances"], True
    )
