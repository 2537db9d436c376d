"""The runaway-job guard: watch running jobs minute by minute, project their cost, stop the runaway.

Billing data arrives hours to a day late; the guard reads job-level usage instead. Every
``guard.every`` (60 s by default, 15 s at the fastest) it lists running work on every watched
platform through the job sources' listers, prices each job (cost so far, projected cost, burn rate —
and how each was estimated), checks the configured caps, and opens or updates one ``guard`` incident
per breach. Kill-switch rules decide what happens to it (alert, approve, cancel/stop), through the
same journal and safety checks as every other action. See ``docs/guard.md``.

Public API::

    run_guard(config, store, clock, clients=None) -> GuardRun
    run_guard_pass(guard, killswitch, sources, store, clock, *, clients=None, state=None) -> GuardRun
    GuardConfig                                  the ``guard:`` config section
    audit(config, ...) -> AuditReport            what lacks a native limit (``spendwatch guard audit``)
    replay_runaway(store, clock, config) -> GuardDemoResult   the demo's runaway query, poll by poll
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "GuardConfig": "config",
    "GuardRun": "engine",
    "run_guard": "engine",
    "run_guard_pass": "engine",
    "AuditReport": "audit",
    "audit": "audit",
    "GuardDemoResult": "demo",
    "replay_runaway": "demo",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    # Lazy, so importing the config model (or ``spendwatch --help``) does not import cloud clients.
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'spendwatch.guard' has no attribute {name!r}")
    return getattr(importlib.import_module(f"spendwatch.guard.{module}"), name)
