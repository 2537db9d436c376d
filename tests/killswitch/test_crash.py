"""A real process killed between "planned" and "done": the next run neither loses nor repeats the action."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import pytest

from spendwatch.clock import SystemClock
from spendwatch.killswitch.engine import run_killswitch
from spendwatch.killswitch.journal import action_events, list_actions
from spendwatch.store import Store
from tests.doubles.waits import PATIENCE
from tests.killswitch.factories import REGION, incident, rule, settings

CHILD = Path(__file__).with_name("crash_child.py")


def _kill_child_at(tmp_path: Path, endpoint: str, instance: str, event: str) -> Path:
    store_path = tmp_path / "crash.duckdb"
    Store(store_path).migrate()
    marker = tmp_path / "frozen"
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(store_path), endpoint, instance, event, str(marker)],
        env={**os.environ, "PYTHONPATH": str(CHILD.parents[2])},
    )
    deadline = time.monotonic() + PATIENCE
    while not marker.exists():
        if child.poll() is not None or time.monotonic() > deadline:
            child.kill()
            pytest.fail(f"the child never reached {event} (exit {child.returncode})")
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=PATIENCE)
    return store_path


def _next_run(store_path: Path, endpoint: str, instance: str) -> tuple[Any, list[str]]:
    calls: list[str] = []
    session = boto3.Session(region_name=REGION)
    session.events.register("before-call.ec2.StopInstances", lambda **_: calls.append("StopInstances"))
    config = settings([rule(how="enforce")], endpoint=endpoint)
    run = run_killswitch(
        config, Store(store_path), SystemClock(), clients={"aws_session": session}, incidents=[incident([instance])]
    )
    return run, calls


def _state(aws: Any, instance: str) -> str:
    answer = aws("ec2").describe_instances(InstanceIds=[instance])
    return str(answer["Reservations"][0]["Instances"][0]["State"]["Name"])


@pytest.mark.parametrize(
    ("event", "left_in", "stop_calls_after"),
    [
        ("before-call.ec2.DescribeInstances", "planned", 1),  # killed right after the plan was journaled
        ("before-call.ec2.StopInstances", "running", 1),  # journaled running, the call never left
        ("after-call.ec2.StopInstances", "running", 0),  # the call landed, "done" was never written
    ],
)
def test_killed_between_planned_and_done(
    tmp_path: Path, aws: Any, event: str, left_in: str, stop_calls_after: int
) -> None:
    [instance] = [
        i["InstanceId"] for i in aws("ec2").run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)["Instances"]
    ]
    store_path = _kill_child_at(tmp_path, aws.endpoint_url, instance, event)

    [orphan] = list_actions(Store(store_path))
    assert orphan.state == left_in
    landed = event.startswith("after-call")
    assert _state(aws, instance) == ("stopped" if landed else "running")

    run, calls = _next_run(store_path, aws.endpoint_url, instance)

    assert calls == ["StopInstances"] * stop_calls_after  # never twice
    [action] = list_actions(Store(store_path))  # never lost, never duplicated
    assert action.id == orphan.id and action.state == "done"
    assert [r.id for r in run.reconciled] == [action.id]
    assert _state(aws, instance) == "stopped"
    states = [e.state for e in action_events(Store(store_path), action.id)]
    assert states[0] == "planned" and states[-1] == "done" and states.count("done") == 1
    if landed:
        assert action.result is not None and action.result.get("reconciled") is True

    again, calls = _next_run(store_path, aws.endpoint_url, instance)
    assert calls == [] and not again.executed and again.unchanged == 1
