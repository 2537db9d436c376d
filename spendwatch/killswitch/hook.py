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

The executable runs with a minimal environment — ``PATH``, ``HOME``, ``LANG``/``LC_*``, ``TZ``,
``TMPDIR``, ``SPENDWATCH_ACTION_ID`` and ``SPENDWATCH_HOOK_PHASE`` — plus the hook's own ``env:`` and
the variables it names in ``pass_env:``; never the daemon's credentials or config secrets.
Exit status 0 (or an HTTP 2xx) is success; anything else, or the timeout, fails the action with the
tail of stderr (or the HTTP status) as the error. A hook's outcome cannot be re-read, so a hook
interrupted by a crash is marked failed, never run twice.

The URL, header and ``env`` values are secrets: messages name a webhook by ``redact_url`` (scheme and
host) and a command by its program, and what a hook prints is scrubbed of its secrets before it is
journaled.
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

from pydantic import SecretStr

from spendwatch import __version__
from spendwatch.errors import ActionError
from spendwatch.killswitch.base import Action, ActionContext, NoOptions, Observed, Outcome, Target
from spendwatch.killswitch.config import HookConfig
from spendwatch.secrets import redact_url, scrub, secret_values

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
        return f"would run hook {self.where} for {target.describe()}"

    @property
    def where(self) -> str:
        """The hook as messages name it: its program, or its URL's scheme and host (never the secret)."""
        return self.hook.command[0] if self.hook.command else redact_url(self.hook.url or "")

    def execute(self, target: Target, observed: Observed) -> Outcome:
        return self._fire("act", self.hook.command, self.hook.url)

    def undo(self, target: Target, snapshot: Mapping[str, Any]) -> Outcome:
        if not self.hook.reversible:
            raise ActionError("this hook has no undo_command or undo_url")
        return self._fire("undo", self.hook.undo_command, self.hook.undo_url)

    def took_effect(self, observed: Observed) -> bool:
        return False

    def _fire(self, phase: str, command: list[str] | None, url: SecretStr | None) -> Outcome:
        body = json.dumps({**self.payload, "phase": phase}, default=str, sort_keys=True).encode()
        secrets = self.secrets()
        try:
            if command is not None:
                env = hook_environment(self.hook, self.payload, phase)
                outcome = run_command(command, body, self.hook.timeout.total_seconds(), env)
            else:
                assert url is not None
                headers = {k: v.get_secret_value() for k, v in self.hook.headers.items()}
                outcome = post_webhook(url, body, self.hook.timeout.total_seconds(), headers, self.context)
        except ActionError as exc:
            raise ActionError(scrub(str(exc), secrets)) from None
        return Outcome(scrub(outcome.summary, secrets), _scrubbed(outcome.detail, secrets))

    def secrets(self) -> list[str]:
        """The hook's own secrets, and the values of what it passes on from spendwatch's environment."""
        passed = [os.environ[name] for name in self.hook.pass_env if os.environ.get(name)]
        return [*secret_values(self.hook), *passed]


def _scrubbed(detail: Mapping[str, Any], secrets: list[str]) -> dict[str, Any]:
    return {k: scrub(v, secrets) if isinstance(v, str) else v for k, v in detail.items()}


# Variables a program needs to run at all; nothing that carries a credential.
BASE_ENVIRONMENT = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")


def hook_environment(hook: HookConfig, payload: Mapping[str, Any], phase: str) -> dict[str, str]:
    """A hook command's whole environment: the basics, what its config gives it, and the action."""
    env = {name: os.environ[name] for name in BASE_ENVIRONMENT if name in os.environ}
    env.setdefault("PATH", os.defpath)
    env.update({name: os.environ[name] for name in hook.pass_env if name in os.environ})
    env.update({name: value.get_secret_value() for name, value in hook.env.items()})
    env["SPENDWATCH_ACTION_ID"] = str(payload.get("action", {}).get("id", ""))
    env["SPENDWATCH_HOOK_PHASE"] = phase
    return env


def run_command(command: list[str], body: bytes, timeout: float, env: Mapping[str, str]) -> Outcome:
    try:
        process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
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


def post_webhook(
    url: SecretStr, body: bytes, timeout: float, headers: Mapping[str, str], context: ActionContext
) -> Outcome:
    where = redact_url(url)
    try:
        request = urllib.request.Request(
            url.get_secret_value(),
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": f"spendwatch/{__version__}", **dict(headers)},
        )
    except ValueError:  # urllib quotes the whole URL in its message: never pass it on
        raise ActionError(f"webhook {where}: not a usable URL") from None
    opener = context.http_opener()
    try:
        with opener.open(request, timeout=timeout) as response:
            status = int(response.status)
            text = response.read(4096).decode(errors="replace")
    except urllib.error.HTTPError as exc:
        raise ActionError(f"webhook {where} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ActionError(f"webhook {where} failed: {reason}") from None
    if not 200 <= status < 300:
        raise ActionError(f"webhook {where} answered HTTP {status}")
    return Outcome(f"webhook answered HTTP {status}", {"http_status": status, "body": text[:2000]})
