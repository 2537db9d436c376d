"""What one kill-switch run did (``KillSwitchRun``), and who is running an action (``runner_id``)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from datetime import datetime

from spendwatch.killswitch.base import Target
from spendwatch.killswitch.journal import ActionRecord


@dataclass(frozen=True)
class SkipNote:
    """Something a run did not do, and why."""

    rule: str
    target: str
    reason: str
    action_id: int | None = None


@dataclass
class KillSwitchRun:
    """What one run did. Every list holds journal records as they stand after the run."""

    started_at: datetime
    paused: bool = False
    planned: list[ActionRecord] = field(default_factory=list)
    executed: list[ActionRecord] = field(default_factory=list)
    dry_run: list[ActionRecord] = field(default_factory=list)
    awaiting_approval: list[ActionRecord] = field(default_factory=list)
    skipped: list[SkipNote] = field(default_factory=list)
    failed: list[ActionRecord] = field(default_factory=list)
    expired: list[ActionRecord] = field(default_factory=list)
    reconciled: list[ActionRecord] = field(default_factory=list)
    unchanged: int = 0

    def summary(self) -> str:
        if self.paused:
            return f"kill switch paused: nothing acted on ({len(self.expired)} approval(s) expired)"
        return (
            f"{len(self.planned)} planned, {len(self.executed)} executed, {len(self.dry_run)} dry-run, "
            f"{len(self.awaiting_approval)} awaiting approval, {len(self.skipped)} skipped, {len(self.failed)} failed, "
            f"{len(self.expired)} expired, {len(self.reconciled)} reconciled, {self.unchanged} already journaled"
        )


def runner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def runner_alive(runner: str | None) -> bool:
    """Whether the process that moved an action to ``running`` is still alive (same host only)."""
    if not runner:
        return False
    host, _, pid_text = runner.rpartition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def idempotency_key(rule: str, mode: str, verb: str, target: Target, episode: str) -> str:
    return f"{rule}|{mode}|{verb}|{target.key}|{episode}"
