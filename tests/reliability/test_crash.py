"""SIGKILL at 20 seeded moments of each pass: the store opens, a re-run converges, nothing happens twice.

For each pass (collect, detect, a kill-switch pass, a digest send) a counting child lists the moments a
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

import json
import multiprocessing
import os
import random
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from spendwatch.killswitch.journal import action_events, list_actions
from spendwatch.snapshots import check_file
from spendwatch.store import Store
from tests.doubles.aws_faults import FaultProxy
from tests.doubles.smtp import SmtpServer
from tests.killswitch.factories import REGION
from tests.reliability import crash_ops as ops

KILLS = 20
SEED = 14
KILLED: dict[str, tuple[int, int]] = {}  # operation -> (kills, moments), printed for docs/reliability.md
CHILD_DEADLINE = 180.0

pytestmark = pytest.mark.slow


# -- the forkserver ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def forks() -> Any:
    """A forkserver with spendwatch (and this test's passes) imported: each child starts in milliseconds."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["tests.reliability.crash_ops"])
    return context


def run_child(forks: Any, job: ops.Job) -> bool:
    """Run ``job`` in a child; with ``kill_at``, SIGKILL it at that moment. True if it was killed there."""
    ready = forks.Event()
    process = forks.Process(target=ops.child, args=(job, ready), daemon=True)
    process.start()
    try:
        deadline = CHILD_DEADLINE
        while not ready.wait(0.02):
            deadline -= 0.02
            if not process.is_alive() or deadline <= 0:
                break
        if ready.is_set():
            os.kill(process.pid, signal.SIGKILL)
        process.join(60)
        if job.kill_at is None:
            assert process.exitcode == 0, f"the counting run of {job.operation} failed ({process.exitcode})"
        return ready.is_set()
    finally:
        if process.is_alive():
            process.kill()
            process.join()


def moments(forks: Any, job: ops.Job, tmp: Path) -> list[str]:
    events = tmp / "moments.json"
    run_child(forks, ops.Job(**{**job.__dict__, "kill_at": None, "events_file": str(events)}))
    seen: list[str] = json.loads(events.read_text())
    return seen


def kill_points(seen: list[str], salt: str, must: tuple[str, ...]) -> list[int]:
    """Twenty seeded moments, plus every moment around the calls that must never happen twice."""
    rng = random.Random(f"{SEED}:{salt}")
    drawn = set(rng.sample(range(1, len(seen) + 1), min(KILLS, len(seen))))
    around = {index for index, label in enumerate(seen, 1) if any(word in label for word in must)}
    return sorted(drawn | around)


def restore(template: Path, folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(template, folder)


def crash_and_recover(
    forks: Any,
    tmp_path: Path,
    template: Path,
    job: ops.Job,
    recover: Callable[[Path], Any],
    before_each: Callable[[], None] = lambda: None,
    must: tuple[str, ...] = (),
) -> Iterator[tuple[int, str, Path, Any]]:
    """For each seeded moment: fresh state, child killed there, store checked, pass re-run here."""
    counting = tmp_path / "counting"
    restore(template, counting)
    before_each()
    seen = moments(forks, ops.Job(**{**job.__dict__, "folder": str(counting)}), tmp_path)
    assert len(seen) >= KILLS, f"only {len(seen)} moments in a clean {job.operation}"
    points = kill_points(seen, job.operation, must)
    work = tmp_path / "work"
    for point in points:
        restore(template, work)
        before_each()
        killed = run_child(forks, ops.Job(**{**job.__dict__, "folder": str(work), "kill_at": point}))
        assert killed, f"{job.operation}: the child never reached moment {point} ({seen[point - 1]})"
        check = check_file(work / "store.duckdb")
        assert check.ok, f"{job.operation} killed at {seen[point - 1]!r}: {check.problem}"
        yield point, seen[point - 1], work, recover(work)
    print(f"{job.operation}: {len(points)} kills at moments {points} of {len(seen)}")
    KILLED[job.operation] = (len(points), len(seen))


# -- state compared with the clean run ----------------------------------------------------------------


def cost_totals(store: Store) -> list[tuple[Any, ...]]:
    return store.query(
        "SELECT source, date_trunc('month', charge_period_start) AS month, count(*), round(sum(billed_cost), 6) "
        "FROM cost_lines GROUP BY ALL ORDER BY ALL"
    )


def loads(store: Store) -> list[tuple[Any, ...]]:
    return store.query("SELECT source, period_start, count(*) FROM loads GROUP BY ALL ORDER BY ALL")


def incidents(store: Store) -> list[tuple[Any, ...]]:
    return store.query(
        "SELECT monitor, granularity, series_key, kind, status, first_seen, last_seen, severity, round(impact, 4) "
        "FROM anomalies ORDER BY ALL"
    )


def open_store(folder: Path) -> Store:
    return Store(folder / "store.duckdb", lock_timeout=60)


# -- the estate every pass starts from ----------------------------------------------------------------


@pytest.fixture(scope="module")
def estate(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Starting states: empty (for collect), collected (for detect), detected (for the digest)."""
    root = tmp_path_factory.mktemp("crash-estate")
    empty = root / "empty"
    ops.write_workspace(empty)
    collected = root / "collected"
    shutil.copytree(empty, collected)
    ops.collect(collected, ("exports", "estate"))
    detected = root / "detected"
    shutil.copytree(collected, detected)
    ops.detect(detected)
    return {"empty": empty, "collected": collected, "detected": detected}


# -- the four passes ----------------------------------------------------------------------------------


def test_collect_killed_anywhere_converges_to_the_clean_totals(
    forks: Any, estate: dict[str, Path], tmp_path: Path
) -> None:
    clean = tmp_path / "clean"
    restore(estate["empty"], clean)
    ops.collect(clean)
    expected = (cost_totals(open_store(clean)), loads(open_store(clean)))
    assert expected[0], "the clean collection stored nothing"

    for _, moment, folder, _ in crash_and_recover(
        forks, tmp_path, estate["empty"], ops.Job("collect", ""), recover=ops.collect
    ):
        store = open_store(folder)
        assert (cost_totals(store), loads(store)) == expected, f"killed at {moment!r}"


def test_detect_killed_anywhere_converges_to_the_clean_incidents(
    forks: Any, estate: dict[str, Path], tmp_path: Path
) -> None:
    clean = tmp_path / "clean"
    restore(estate["collected"], clean)
    ops.detect(clean)
    expected = incidents(open_store(clean))
    assert expected, "the clean detection opened no incident"

    for _, moment, folder, _ in crash_and_recover(
        forks, tmp_path, estate["collected"], ops.Job("detect", ""), recover=ops.detect
    ):
        found = incidents(open_store(folder))
        assert found == expected, f"killed at {moment!r}"


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
    forks: Any, estate: dict[str, Path], tmp_path: Path, ec2: tuple[FaultProxy, Any, tuple[str, ...]]
) -> None:
    proxy, client, instances = ec2

    def running_again() -> None:
        client.start_instances(InstanceIds=list(instances))
        proxy.seen.clear()

    def recover(folder: Path) -> Any:
        return ops.killswitch(folder, proxy.endpoint_url, instances)

    job = ops.Job("killswitch", "", endpoint=proxy.endpoint_url, instances=instances)
    for _, moment, folder, _ in crash_and_recover(
        forks, tmp_path, estate["empty"], job, recover=recover, before_each=running_again, must=("StopInstances",)
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
    forks: Any, estate: dict[str, Path], tmp_path: Path, smtp: SmtpServer
) -> None:
    template = tmp_path / "template"
    restore(estate["detected"], template)
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
