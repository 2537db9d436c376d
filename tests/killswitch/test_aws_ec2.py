"""EC2 stop through the whole engine, against moto on 127.0.0.1 with real boto3."""

from __future__ import annotations

from typing import Any

from spendwatch.killswitch.engine import KillSwitch, run_killswitch
from spendwatch.killswitch.journal import action_events, get_action, list_actions
from spendwatch.store import Store
from tests.killswitch.factories import incident, rule, settings


def _instances(ec2: Any, count: int, tags: dict[str, str] | None = None) -> list[str]:
    params: dict[str, Any] = {
        "ImageId": "ami-12c6146b",
        "MinCount": count,
        "MaxCount": count,
        "InstanceType": "t3.micro",
    }
    if tags:
        params["TagSpecifications"] = [
            {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
        ]
    return [i["InstanceId"] for i in ec2.run_instances(**params)["Instances"]]


def _state(ec2: Any, instance_id: str) -> str:
    reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    return str(reservations[0]["Instances"][0]["State"]["Name"])


def test_enforce_stops_the_culprit_and_journals_before_and_after(aws: Any, store: Store, ks_clock: Any) -> None:
    ec2 = aws("ec2")
    [culprit] = _instances(ec2, 1, {"owner": "ana"})
    config = settings([rule(do="stop", how="enforce")], endpoint=aws.endpoint_url)

    run = run_killswitch(config, store, ks_clock, incidents=[incident([culprit])])

    assert _state(ec2, culprit) in ("stopping", "stopped")
    [record] = run.executed
    assert record.state == "done" and record.target.resource_id == culprit
    assert record.target.owner == "ana"  # filled in from the re-read tags
    assert record.prior_state is not None and record.prior_state["state"] == "running"
    states = [e.state for e in action_events(store, record.id)]
    assert states == ["planned", "running", "done"]


def test_protected_instance_is_never_touched(aws: Any, store: Store, ks_clock: Any) -> None:
    ec2 = aws("ec2")
    [guarded] = _instances(ec2, 1, {"spendwatch:protect": "true"})
    [prod] = _instances(ec2, 1, {"env": "Prod"})
    [free] = _instances(ec2, 1)
    config = settings([rule(do="stop", how="enforce")], endpoint=aws.endpoint_url)

    run = run_killswitch(config, store, ks_clock, incidents=[incident([guarded, prod, free])])

    assert _state(ec2, guarded) == "running"
    assert _state(ec2, prod) == "running"
    assert _state(ec2, free) in ("stopping", "stopped")
    reasons = {note.target.split()[2]: note.reason for note in run.skipped}
    assert "spendwatch:protect=true" in reasons[guarded]
    assert "env=Prod" in reasons[prod]


def test_dry_run_is_the_default_and_asks_ec2_natively(aws: Any, store: Store, ks_clock: Any) -> None:
    ec2 = aws("ec2")
    [culprit] = _instances(ec2, 1)
    spec = rule(do="stop")
    del spec["how"]
    config = settings([spec], endpoint=aws.endpoint_url)

    run = run_killswitch(config, store, ks_clock, incidents=[incident([culprit])])

    assert _state(ec2, culprit) == "running"
    [record] = run.dry_run
    assert record.mode == "dry-run" and record.state == "skipped"
    assert record.result is not None and "would succeed" in record.result["summary"]


def test_same_incident_is_acted_on_once_and_undo_restarts(aws: Any, store: Store, ks_clock: Any) -> None:
    ec2 = aws("ec2")
    [culprit] = _instances(ec2, 1)
    config = settings([rule(do="stop", how="enforce")], endpoint=aws.endpoint_url)
    seen = incident([culprit])

    first = run_killswitch(config, store, ks_clock, incidents=[seen])
    second = run_killswitch(config, store, ks_clock, incidents=[seen])
    assert len(first.executed) == 1 and not second.executed and second.unchanged == 1

    ec2.stop_instances(InstanceIds=[culprit])  # moto: let it settle to "stopped"
    undone = KillSwitch(config, store, ks_clock).undo(first.executed[0].id, "ana")
    assert undone.state == "undone" and undone.undone_at is not None
    assert _state(ec2, culprit) in ("pending", "running")
    assert [e.actor for e in action_events(store, undone.id)][-2:] == ["ana", "ana"]
    assert get_action(store, undone.id).result["undo"].startswith("started")  # type: ignore[index]
    assert len(list_actions(store)) == 1
