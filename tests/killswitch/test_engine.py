"""The engine's journal and safety belts, with EC2 on moto as the cloud."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pyarrow as pa
import pytest

from spendwatch.errors import UserError
from spendwatch.killswitch.engine import KillSwitch, run_killswitch
from spendwatch.killswitch.journal import action_events, list_actions, mark_notified, unnotified_actions
from spendwatch.killswitch.safety import set_paused
from spendwatch.store import Store
from tests.killswitch.factories import ACCOUNT, NOW, REGION, incident, rule, settings


def _instances(aws: Any, count: int, tags: dict[str, str] | None = None) -> list[str]:
    params: dict[str, Any] = {"ImageId": "ami-12c6146b", "MinCount": count, "MaxCount": count}
    if tags:
        params["TagSpecifications"] = [
            {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
        ]
    return [i["InstanceId"] for i in aws("ec2").run_instances(**params)["Instances"]]


def _running(aws: Any, ids: list[str]) -> set[str]:
    answer = aws("ec2").describe_instances(InstanceIds=ids)
    return {i["InstanceId"] for r in answer["Reservations"] for i in r["Instances"] if i["State"]["Name"] == "running"}


def test_approval_flow_approve_executes_and_records_actor(aws: Any, store: Store, ks_clock: Any) -> None:
    [vm] = _instances(aws, 1)
    config = settings([rule(how="approve")], endpoint=aws.endpoint_url)
    run = run_killswitch(config, store, ks_clock, incidents=[incident([vm])])
    [waiting] = run.awaiting_approval
    assert waiting.expires_at == NOW + timedelta(hours=24)
    assert _running(aws, [vm]) == {vm}

    done = KillSwitch(config, store, ks_clock).approve(waiting.id, "lead")
    assert done.state == "done" and done.decided_by == "lead"
    assert _running(aws, [vm]) == set()
    assert [(e.state, e.actor) for e in action_events(store, done.id)] == [
        ("planned", "spendwatch"),
        ("awaiting-approval", "spendwatch"),
        ("approved", "lead"),
        ("running", "spendwatch"),
        ("done", "spendwatch"),
    ]


def test_approval_expires_into_doing_nothing(aws: Any, store: Store, ks_clock: Any) -> None:
    [vm] = _instances(aws, 1)
    config = settings([rule(how="approve", approval_expiry="2h")], endpoint=aws.endpoint_url)
    [waiting] = run_killswitch(config, store, ks_clock, incidents=[incident([vm])]).awaiting_approval
    ks_clock.advance(hours=3)
    with pytest.raises(UserError, match="expired"):
        KillSwitch(config, store, ks_clock).approve(waiting.id, "lead")
    assert list_actions(store)[0].state == "expired"
    assert _running(aws, [vm]) == {vm}


def test_expiry_happens_in_the_run_too(aws: Any, store: Store, ks_clock: Any) -> None:
    [vm] = _instances(aws, 1)
    config = settings([rule(how="approve")], endpoint=aws.endpoint_url)
    run_killswitch(config, store, ks_clock, incidents=[incident([vm])])
    ks_clock.advance(hours=25)
    later = run_killswitch(config, store, ks_clock, incidents=[])
    assert [r.state for r in later.expired] == ["expired"]


def test_reject_records_who_and_does_nothing(aws: Any, store: Store, ks_clock: Any) -> None:
    [vm] = _instances(aws, 1)
    config = settings([rule(how="approve")], endpoint=aws.endpoint_url)
    [waiting] = run_killswitch(config, store, ks_clock, incidents=[incident([vm])]).awaiting_approval
    rejected = KillSwitch(config, store, ks_clock).reject(waiting.id, "ana", "needed for the demo")
    assert rejected.state == "rejected" and rejected.decided_by == "ana"
    assert action_events(store, rejected.id)[-1].detail["note"] == "needed for the demo"
    with pytest.raises(UserError, match="only an action awaiting approval"):
        KillSwitch(config, store, ks_clock).approve(waiting.id, "lead")
    assert _running(aws, [vm]) == {vm}


def test_global_pause_stops_runs_and_approvals(aws: Any, store: Store, ks_clock: Any) -> None:
    vms = _instances(aws, 2)
    config = settings([rule(how="enforce")], endpoint=aws.endpoint_url)
    set_paused(store, True, "oncall")
    paused = run_killswitch(config, store, ks_clock, incidents=[incident(vms)])
    assert paused.paused and not paused.planned
    assert _running(aws, vms) == set(vms)
    set_paused(store, False, "oncall")
    resumed = run_killswitch(config, store, ks_clock, incidents=[incident(vms)])
    assert len(resumed.executed) == 2


def test_caps_per_run_and_per_hour(aws: Any, store: Store, ks_clock: Any) -> None:
    vms = _instances(aws, 5)
    config = settings(
        [rule(how="enforce")], endpoint=aws.endpoint_url, caps={"max_actions_per_run": 2, "max_actions_per_hour": 3}
    )
    first = run_killswitch(config, store, ks_clock, incidents=[incident(vms[:3], incident_id=1)])
    assert len(first.executed) == 2
    assert "max_actions_per_run (2)" in first.skipped[0].reason
    second = run_killswitch(config, store, ks_clock, incidents=[incident(vms[3:], incident_id=2)])
    assert len(second.executed) == 1
    assert any("max_actions_per_hour (3)" in n.reason for n in second.skipped)
    assert len(_running(aws, vms)) == 2


def test_at_stake_cap(aws: Any, store: Store, ks_clock: Any) -> None:
    vms = _instances(aws, 3)
    # each instance carries 480/3 $ of a daily incident → 160 $ at stake per day each
    config = settings([rule(how="enforce")], endpoint=aws.endpoint_url, caps={"max_at_stake_per_run": 200})
    run = run_killswitch(config, store, ks_clock, incidents=[incident(vms)])
    assert len(run.executed) == 1
    assert all("max_at_stake_per_run" in n.reason for n in run.skipped)


def test_rule_matching_too_many_targets_acts_on_none(aws: Any, store: Store, ks_clock: Any) -> None:
    vms = _instances(aws, 4)
    config = settings([rule(how="enforce", max_targets=3)], endpoint=aws.endpoint_url)
    run = run_killswitch(config, store, ks_clock, incidents=[incident(vms)])
    assert not run.planned and "more than max_targets (3)" in run.skipped[0].reason
    assert _running(aws, vms) == set(vms)


def test_owner_change_between_plan_and_approval_skips(aws: Any, store: Store, ks_clock: Any) -> None:
    [vm] = _instances(aws, 1, {"owner": "ana"})
    config = settings([rule(how="approve")], endpoint=aws.endpoint_url)
    [waiting] = run_killswitch(config, store, ks_clock, incidents=[incident([vm])]).awaiting_approval
    aws("ec2").create_tags(Resources=[vm], Tags=[{"Key": "owner", "Value": "bob"}])
    result = KillSwitch(config, store, ks_clock).approve(waiting.id, "lead")
    assert result.state == "skipped" and "owner changed from ana to bob" in result.result["summary"]  # type: ignore[index]
    assert _running(aws, [vm]) == {vm}


def test_state_change_between_plan_and_approval_skips(aws: Any, store: Store, ks_clock: Any) -> None:
    [vm] = _instances(aws, 1)
    config = settings([rule(how="approve")], endpoint=aws.endpoint_url)
    [waiting] = run_killswitch(config, store, ks_clock, incidents=[incident([vm])]).awaiting_approval
    aws("ec2").terminate_instances(InstanceIds=[vm])
    result = KillSwitch(config, store, ks_clock).approve(waiting.id, "lead")
    assert result.state == "skipped" and "state is" in result.result["summary"]  # type: ignore[index]


def test_protected_account_and_listed_resource(aws: Any, store: Store, ks_clock: Any) -> None:
    vms = _instances(aws, 2)
    config = settings([rule(how="enforce")], endpoint=aws.endpoint_url, protection={"accounts": [ACCOUNT]})
    run = run_killswitch(config, store, ks_clock, incidents=[incident(vms)])
    assert not run.executed and all(f"protected account {ACCOUNT}" in n.reason for n in run.skipped)
    config = settings([rule(how="enforce")], endpoint=aws.endpoint_url, protection={"resources": [vms[0]]})
    run = run_killswitch(config, store, ks_clock, incidents=[incident(vms, incident_id=9)])
    assert [r.target.resource_id for r in run.executed] == [vms[1]]


def test_cloud_failure_is_journaled_as_failed(aws: Any, store: Store, ks_clock: Any) -> None:
    config = settings([rule(how="enforce")], endpoint=aws.endpoint_url)
    run = run_killswitch(config, store, ks_clock, incidents=[incident(["i-0123456789abcdef0"])])
    # moto answers InvalidInstanceID.NotFound → the target is gone → skipped, not acted on
    assert not run.executed and "gone" in run.skipped[0].reason


def test_notification_contract(aws: Any, store: Store, ks_clock: Any) -> None:
    [vm] = _instances(aws, 1, {"owner": "ana"})
    config = settings([rule(how="enforce")], endpoint=aws.endpoint_url)
    run_killswitch(config, store, ks_clock, incidents=[incident([vm])])
    [pending] = unnotified_actions(store)
    assert pending.state == "done" and pending.owner == "ana"
    assert mark_notified(store, pending.id, "done")
    assert unnotified_actions(store) == []
    KillSwitch(config, store, ks_clock).undo(pending.id, "ana")
    [again] = unnotified_actions(store)
    assert again.state == "undone"
    assert not mark_notified(store, again.id, "done")  # stale: the action moved on
    assert list_actions(store, states=["undone"], since=NOW)[0].id == pending.id


def test_job_rule_reads_the_jobs_table(aws: Any, store: Store, ks_clock: Any) -> None:
    from spendwatch.store.schema import JOB_SCHEMA

    [vm] = _instances(aws, 1)
    rows = [
        {
            "platform": "ec2",
            "job_id": vm,
            "provider": "aws",
            "sub_account_id": ACCOUNT,
            "region_id": REGION,
            "state": "RUNNING",
            "billing_currency": "USD",
            "estimated_cost": 90.0,
            "projected_cost": 900.0,
            "owner": "ana",
            "start_time": NOW - timedelta(hours=3),
            "labels": [("team", "ml")],
        },
        {
            "platform": "ec2",
            "job_id": "i-0fffffffffffffff0",
            "provider": "aws",
            "sub_account_id": ACCOUNT,
            "region_id": REGION,
            "state": "RUNNING",
            "billing_currency": "USD",
            "estimated_cost": 1.0,
            "projected_cost": 2.0,
            "owner": "bob",
            "labels": [("team", "web")],
        },
    ]
    table = pa.Table.from_pylist(rows, schema=pa.schema([JOB_SCHEMA.field(c) for c in rows[0]]))
    store.upsert_jobs("aws-jobs", table)
    spec = rule(how="enforce", when={"job": {"min_projected_cost": 500, "labels": {"team": ["ml"]}}})
    run = run_killswitch(settings([spec], endpoint=aws.endpoint_url), store, ks_clock)
    [done] = run.executed
    assert done.target.resource_id == vm and done.at_stake == pytest.approx(810.0)
    assert done.saving_per_hour == pytest.approx(30.0)


def test_an_offline_engine_asks_no_cloud_even_with_a_client_at_hand(aws: Any, store: Store, ks_clock: Any) -> None:
    """The demo's mode: whatever credentials or clients exist, nothing is read or acted on."""
    [vm] = _instances(aws, 1)
    config = settings([rule(how="enforce")], endpoint=aws.endpoint_url)
    enforced = run_killswitch(config, store, ks_clock, incidents=[incident([vm])], offline="a simulated estate")
    assert not enforced.executed and _running(aws, [vm]) == {vm}

    planned = run_killswitch(
        settings([rule(how="dry-run", name="plan")], endpoint=aws.endpoint_url),
        store,
        ks_clock,
        incidents=[incident([vm], incident_id=2)],
        offline="a simulated estate",
    )
    [would] = planned.dry_run
    assert would.result["verified"] is False
    assert "current state not verified: no AWS ec2 client: a simulated estate" in would.result["summary"]


def test_the_demo_plans_without_asking_any_cloud(pinned_demo: Any) -> None:
    assert pinned_demo.plan.dry_run, "the demo plans at least one action"
    for action in pinned_demo.plan.dry_run:
        assert action.result["verified"] is False, action.summary
        assert "the demo's estate is simulated" in action.result["summary"], action.result["summary"]


def test_one_culprit_named_by_several_incidents_is_one_action(aws: Any, store: Store, ks_clock: Any) -> None:
    """The account's total, its service and its owner each alert on the same runaway: one action, not
    three (no duplicate approvals, no second stop), and a rule limited to one target still acts."""
    [vm] = _instances(aws, 1)
    config = settings([rule(how="enforce", max_targets=1)], endpoint=aws.endpoint_url)
    named = [incident([vm], incident_id=number) for number in (9, 4, 12)]
    run = run_killswitch(config, store, ks_clock, incidents=named)
    [done] = run.executed
    assert not run.skipped
    assert done.anomaly_id == 4  # the oldest incident: stable from run to run
    assert done.reason.endswith("(also matched by incident #9, incident #12)")
    assert [a.target.resource_id for a in list_actions(store)] == [vm]
    assert _running(aws, [vm]) == set()

    again = run_killswitch(config, store, ks_clock, incidents=named)
    assert not again.planned and again.unchanged == 1


def test_merging_matches_keeps_one_the_rule_may_act_on() -> None:
    """If the oldest incident naming a target lies outside the rule's scope, the merged match is one
    that lies inside: merging never turns an allowed action into a refused one."""
    from spendwatch.killswitch.rules import match_rule, one_match_per_target

    config = settings([rule(how="dry-run")])
    matches = match_rule(
        config.rules[0], [incident(["i-0123456789abcdef0"], incident_id=n) for n in (3, 5, 8)], [], NOW
    )
    assert len(matches) == 3 and len({m.target.key for m in matches}) == 1
    [kept] = one_match_per_target(matches, usable=lambda m: m.anomaly_id != 3)
    assert kept.anomaly_id == 5 and kept.reason.endswith("(also matched by incident #8, incident #3)")
    [alone] = one_match_per_target(matches[:1], usable=lambda m: True)
    assert alone == matches[0]  # a target matched once is passed through untouched


def test_merging_prefers_the_most_specific_incident() -> None:
    from spendwatch.killswitch.rules import match_rule, one_match_per_target

    config = settings([rule(how="dry-run")])
    total = incident(["i-0123456789abcdef0"], incident_id=2)
    by_owner = incident(["i-0123456789abcdef0"], incident_id=6, owner="ana@example.com")  # one dimension more
    [kept] = one_match_per_target(match_rule(config.rules[0], [total, by_owner], [], NOW), usable=lambda m: True)
    assert kept.anomaly_id == 6 and kept.reason.endswith("(also matched by incident #2)")


def test_a_target_that_is_one_of_the_incidents_jobs_is_described_by_that_job() -> None:
    """One incident, two jobs: the action on the smaller job names the smaller job, not the incident's
    top culprit ("suspend B because A cost $8k" would mislead whoever approves it)."""
    from spendwatch.killswitch.rules import match_rule
    from spendwatch.store.records import JobLink

    def link(name: str, owner: str, cost: float) -> JobLink:
        uri = f"k8s://eks-ml/research/Job/{name}"
        return JobLink(
            platform="kubernetes", job_id=uri, provider="aws", sub_account_id=ACCOUNT, user=owner, name=name,
            state="RUNNING", cost=cost, cost_method="requests x node price", start_time=NOW, end_time=None,
            resource_id=uri,
        )  # fmt: skip

    config = settings([rule(do="suspend", how="dry-run")])
    found = incident(jobs=(link("big-run", "ana@example.com", 400.0), link("small-run", "bo@example.com", 60.0)))
    reasons = {m.target.resource_id: m.reason for m in match_rule(config.rules[0], [found], [], NOW)}
    assert len(reasons) == 2, reasons
    [big] = [r for key, r in reasons.items() if key.endswith("big-run")]
    [small] = [r for key, r in reasons.items() if key.endswith("small-run")]
    assert big.startswith("incident #1 (high spike") and big.endswith(
        f"ana@example.com's Kubernetes workload big-run in {ACCOUNT} cost $400.00"
    )
    assert (
        small.endswith(f"bo@example.com's Kubernetes workload small-run in {ACCOUNT} cost $60.00")
        and "big-run" not in small
    )
