"""The ``hook`` verb: run an executable or POST to a webhook, with a documented JSON payload and a timeout.

The payload (version 1), sent on the executable's stdin or as the POST body::

    {
      "version": 1,
      "phase": "act",                  # or "undo" (only with undo_command / undo_url)
      "action": {"id": 17, "rule": "page-owner", "verb": "hook", "mode": "enforce",
                 "planned_at": "2026-11-20T09:30:00+00:00"},
      "reason": "incident #4 (high spike, +$812.00 over expected on gcp / analytics): …",
      "target": {"provider": "gcp", "resource_type": "bigquery-job", "resource_id": "bquxjob_1",
                 "account": "analytics", "region": "US", "owner": "ana@example.com", "labels": {…},
                 "name": null, "state": "RUNNING", "saving_per_hour": 40.5, "at_stake": 972.0,
                 "currency": "USD", "origin": "incident-job"},
      "incident": {"id": 4, "monitor": …, "severity": "high", "impact": 812.0, "culprit": "…", …} | null,
      "job": {"platform": "bigquery", "job_id": …, "estimated_cost": …, …} | null
    }

The executable also gets ``SPENDWATCH_ACTION_ID`` and ``SPENDWATCH_HOOK_PHASE`` in its environment.
Exit status 0 (or an HTTP 2xx) is success; anything else, or the timeout, fails the action with the
tail of stderr (or the HTTP status) as the error. A hook's outcome cannot be re-read, so a hook
interrupted by a crash is marked failed, never run twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from spendwatch import __version__
from spendwatch.errors import ActionError
from spendwatch.killswitch.base import Action, ActionContext, NoOptions, Observed, Outcome, Target
from spendwatch.killswitch.config import HookConfig

PAYLOAD_VERSION = 1


class HookAction(Action):
    """Not in the registry: built per rule from its ``hook:`` block (it applies to any resource type)."""

    provider = "any"
    resource_type = "any"
    verb = "hook"

    def __init__(self, hook: HookConfig, context: ActionContext, payload: Mapping[str, Any]) -> None:
        super().__init__(NoOptions(), context)
        self.hook = hook
        self.payload = dict(payload)
        self.reversible = hook.reversible  # type: ignore[misc]  # per rule, not per class

    def describe(self, target: Target) -> Observed | None:
        # Nothing to re-read: the hook decides. Protection is still checked on the planned labels.
        return Observed(state="unknown", labels=dict(target.labels))

    def dry_run(self, target: Target, observed: Observed) -> str:
        where = " ".join(self.hook.command) if self.hook.command else str(self.hook.url)
        return f"would run hook {where} for {target.describe()}"

    def execute(self, target: Target, observed: Observed) -> Outcome:
        return self._fire("act", self.hook.command, self.hook.url)

    def undo(self, target: Target, snapshot: Mapping[str, Any]) -> Outcome:
        if not self.hook.reversible:
            raise ActionError("this hook has no undo_command or undo_url")
        return self._fire("undo", self.hook.undo_command, self.hook.undo_url)

    def took_effect(self, observed: Observed) -> bool:
        return False

    def _fire(self, phase: str, command: list[str] | None, url: Any) -> Outcome:
        body = json.dumps({**self.payload, "phase": phase}, default=str, sort_keys=True).encode()
        if command is not None:
            return run_command(command, body, self.hook.timeout.total_seconds(), self.payload, phase)
        return post_webhook(str(url), body, self.hook.timeout.total_seconds(), self.hook.headers, self.context)


def run_command(command: list[str], body: bytes, timeout: float, payload: Mapping[str, Any], phase: str) -> Outcome:
    env = {
        **os.environ,
        "SPENDWATCH_ACTION_ID": str(payload.get("action", {}).get("id", "")),
        "SPENDWATCH_HOOK_PHASE": phase,
    }
    try:
        process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,  # so a timeout kills the hook's children too
        )
    except OSError as exc:
        raise ActionError(f"hook {command[0]}: cannot run ({exc.strerror or exc})") from exc
    try:
        stdout, stderr = process.communicate(body, timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise ActionError(f"hook {command[0]} timed out after {timeout:g}s and was killed") from None
    tail = stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
    if process.returncode != 0:
        raise ActionError(f"hook {command[0]} exited with status {process.returncode}: {tail[0][:300]}")
    out = stdout.decode(errors="replace").strip()
    return Outcome(f"hook {command[0]} succeeded", {"exit_status": 0, "stdout": out[-2000:]})


def post_webhook(url: str, body: bytes, timeout: float, headers: Mapping[str, str], context: ActionContext) -> Outcome:
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": f"spendwatch/{__version__}", **dict(headers)},
    )
    opener = context.clients.get("http_opener") or urllib.request.build_opener()
    try:
        with opener.open(request, timeout=timeout) as response:
            status = int(response.status)
            text = response.read(4096).decode(errors="replace")
    except urllib.error.HTTPError as exc:
        raise ActionError(f"webhook {url} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ActionError(f"webhook {url} failed: {reason}") from None
    if not 200 <= status < 300:
        raise ActionError(f"webhook {url} answered HTTP {status}")
    return Outcome(f"webhook answered HTTP {status}", {"http_status": status, "body": text[:2000]})
