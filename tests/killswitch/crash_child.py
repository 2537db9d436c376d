"""Child process for the crash test: runs one kill-switch pass and freezes at a chosen botocore event.

Usage: python crash_child.py STORE ENDPOINT INSTANCE_ID EVENT MARKER
EVENT is a botocore event name (e.g. ``after-call.ec2.StopInstances``); when it fires the child writes
MARKER and sleeps, so the parent can kill it exactly there.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import boto3

from spendwatch.clock import SystemClock
from spendwatch.killswitch.engine import run_killswitch
from spendwatch.store import Store
from tests.killswitch.factories import REGION, incident, rule, settings


def main() -> None:
    store_path, endpoint, instance, event, marker = sys.argv[1:6]
    session = boto3.Session(region_name=REGION)

    def freeze(**_: object) -> None:
        Path(marker).write_text("frozen")
        time.sleep(120)

    session.events.register(event, freeze)
    config = settings([rule(how="enforce")], endpoint=endpoint)
    run_killswitch(
        config,
        Store(Path(store_path)),
        SystemClock(),
        clients={"aws_session": session},
        incidents=[incident([instance])],
    )


if __name__ == "__main__":
    main()
