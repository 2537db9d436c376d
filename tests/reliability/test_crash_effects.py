"""SIGKILL at 20 seeded moments of each pass: the store opens, a re-run converges, nothing happens twice.

For a kill-switch pass and a digest send (test_crash_store.py: collect and detect) a counting child lists the moments a
clean run goes through (``crash_ops``: SQL statements, AWS calls, SMTP steps, before and after). Twenty
of them are drawn with a fixed seed; for each, a fresh copy of the starting state is run in a child
that stops at that moment and is SIGKILLed there by this process. Then:

Besides the twenty, every moment around the calls that must never happen twice is a kill too: before
and after each StopInstances, and each SMTP step (MAIL, RCPT, DATA) before and after its answer.

* the store file reads end to end (``check_file``);
* the pass, run again here, converges to exactly what the clean run left (totals, incidents, actions);
* no kill-switch action reaches AWS twice (a proxy counts every StopInstances) and is journaled done
  once; no digest reaches the SMTP server twice.

Children fork from a forkserver that has spendwatch imported, so a kill costs milliseconds of start-up
instead of seconds; what they do after the fork is the real code, in a real separate process.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spendwatch.killswitch.journal import action_events, list_actions
from tests.doubles.aws_faults import FaultProxy
from tests.doubles.smtp import SmtpServer
from tests.killswitch.factories import REGION
from tests.reliability import crash_ops as ops
from tests.reliability.crash import crash_and_recover, open_store, restore

pytestmark = pytest.mark.slow


@pytest.fixture
def ec2(moto_server: Any) -> Iterator[tuple[FaultProxy, Any, tuple[str, ...]]]:
    """Two running instances behind a proxy that records every call (and its Action)."""
    import boto3

    proxy = FaultProxy(moto_server.endpoint_url)
    client = boto3.client("ec2", endpoint_url=moto_server.endpoint_url, region_name=REGION)
    answer = client.run_instances(ImageId="ami-12c6146b", MinCount=2, MaxCount=2)
    instances = tuple(sorted(i["InstanceId"] for i in answer["Instances"]))
    yield proxy, client, instances
    proxy.stop()


def stop_calls(proxy: FaultProxy) -> int:
    return sum(1 for seen in proxy.seen if seen.action == "StopInstances" and seen.status == 200)


def test_a_kill_switch_pass_killed_anywhere_never_acts_twice(
    forks: Any, estate: Any, tmp_path: Path, ec2: tuple[FaultProxy, Any, tuple[str, ...]]
) -> None:
    proxy, client, instances = ec2

    def running_again() -> None:
        client.start_instances(InstanceIds=list(instances))
        proxy.seen.clear()

    def recover(folder: Path) -> Any:
        return ops.killswitch(folder, proxy.endpoint_url, instances)

    job = ops.Job("killswitch", "", endpoint=proxy.endpoint_url, instances=instances)
    for _, moment, folder, _ in crash_and_recover(
        forks, tmp_path, estate("empty"), job, recover=recover, before_each=running_again, must=("StopInstances",)
    ):
        store = open_store(folder)
        actions = list_actions(store)
        assert len(actions) == len(instances), f"killed at {moment!r}: {[a.state for a in actions]}"
        assert all(a.state == "done" for a in actions), f"killed at {moment!r}: {[a.state for a in actions]}"
        for action in actions:
            assert [e.state for e in action_events(store, action.id)].count("done") == 1
        # Every instance stopped, each by exactly one StopInstances that reached AWS (child or re-run).
        assert stop_calls(proxy) == len(instances), f"killed at {moment!r}: {stop_calls(proxy)} StopInstances"
        states = client.describe_instances(InstanceIds=list(instances))["Reservations"][0]["Instances"]
        assert {i["State"]["Name"] for i in states} == {"stopped"}
        again = recover(folder)
        assert not again.executed and stop_calls(proxy) == len(instances)


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpServer]:
    server = SmtpServer(tmp_path)
    yield server
    server.stop()


def test_a_digest_send_killed_anywhere_never_goes_out_twice(
    forks: Any, estate: Any, tmp_path: Path, smtp: SmtpServer
) -> None:
    template = tmp_path / "template"
    restore(estate("detected"), template)
    ops.write_workspace(template, smtp_port=smtp.port)
    outcomes: dict[str, int] = {"sent once": 0, "unconfirmed, not delivered": 0, "delivered before the kill": 0}

    def fresh() -> None:
        smtp.messages.clear()

    for _, moment, folder, outcome in crash_and_recover(
        forks, tmp_path, template, ops.Job("digest", ""), recover=ops.digest, before_each=fresh, must=("smtp",)
    ):
        received = smtp.received()
        assert len(received) <= 1, f"killed at {moment!r}: {len(received)} digests went out"
        [row] = open_store(folder).query("SELECT status FROM digests WHERE day = ?", [ops.DAY])
        assert row[0] in ("sent", "unconfirmed"), f"killed at {moment!r}: {row[0]}"
        if not received:
            # The one undecidable window (killed while the data was going out): counted as sent, never twice.
            assert row[0] == "unconfirmed", f"killed at {moment!r}: nothing delivered but {row[0]}"
            outcomes["unconfirmed, not delivered"] += 1
        elif outcome.status == "sent":
            outcomes["sent once"] += 1
        else:
            outcomes["delivered before the kill"] += 1
        assert ops.digest(folder).status == "skipped" and len(smtp.received()) == len(received)
    print(f"digest outcomes: {outcomes}")
