"""The kill switch: rules that suspend the culprit of an incident or a runaway job, safely.

Dry-run is the default; protected resources are never touched; every action is journaled before it
runs; caps, a global pause and approvals stand between a rule and the cloud. See ``docs/killswitch.md``.

Public API::

    run_killswitch(config, store, clock, *, clients=None, incidents=None, jobs=None) -> KillSwitchRun
    KillSwitch(settings, store, clock).approve(id, actor) / .reject(id, actor) / .undo(id, actor)
    list_actions(store, *, states=None, since=None) -> list[ActionRecord]
    unnotified_actions(store) / mark_notified(store, action_id, state)   (the notification contract)

Importing ``killswitch.config`` registers every action (no cloud library is imported until a client is built).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ACTIONS": "base",
    "RESOURCE_TYPES": "base",
    "Action": "base",
    "ActionContext": "base",
    "Observed": "base",
    "Outcome": "base",
    "Target": "base",
    "KillSwitchConfig": "config",
    "Rule": "config",
    "KillSwitch": "engine",
    "KillSwitchRun": "engine",
    "SkipNote": "engine",
    "run_killswitch": "engine",
    "STATES": "journal",
    "ActionEvent": "journal",
    "ActionRecord": "journal",
    "action_events": "journal",
    "get_action": "journal",
    "list_actions": "journal",
    "mark_notified": "journal",
    "unnotified_actions": "journal",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    # Lazy, so ``spendwatch --help`` (which imports the CLI module of this package) stays fast.
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'spendwatch.killswitch' has no attribute {name!r}")
    return getattr(importlib.import_module(f"spendwatch.killswitch.{module}"), name)
