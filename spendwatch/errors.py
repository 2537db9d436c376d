"""Exceptions raised by spendwatch.

The hierarchy, drawn once (as httpx does)::

    SpendwatchError                 anything spendwatch raises on purpose
    ├── UserError                   the user can fix it; the CLI prints one line and exits 2
    │   ├── ConfigError             a config file or value is wrong (names the file and key path)
    │   ├── InputError              an input file or argument is wrong (names the file, row, column)
    │   └── NotFoundError           an id the user named does not exist
    ├── StoreError                  the store cannot be opened, migrated or written
    │   └── StoreBusyError          another process held the store for longer than the timeout
    ├── SourceError                 a collector failed (API, permissions, malformed answer)
    │   └── PermissionDeniedError   the credentials lack a permission (names it)
    ├── ActionError                 a kill-switch action failed or was refused
    ├── DeliveryError               a notification could not be delivered
    └── Interrupted                 the daemon is stopping; the work stopped at a safe point

Every message is written for a person: it says what is wrong and where, on one line.
"""

from __future__ import annotations


class SpendwatchError(Exception):
    """Base class for errors spendwatch raises on purpose."""


class UserError(SpendwatchError):
    """Something the user can fix: bad config, bad input, unknown id."""


class ConfigError(UserError):
    """A configuration file or value is invalid."""


class InputError(UserError):
    """An input file or argument is invalid."""


class NotFoundError(UserError):
    """An id named by the user does not exist."""


class StoreError(SpendwatchError):
    """The store cannot be opened, migrated or written."""


class StoreBusyError(StoreError):
    """Another process held the store for longer than the lock timeout."""


class SourceError(SpendwatchError):
    """A collector failed to fetch or parse its data."""


class PermissionDeniedError(SourceError):
    """The credentials lack a permission; the message names it."""


class ActionError(SpendwatchError):
    """A kill-switch action failed or was refused."""


class DeliveryError(SpendwatchError):
    """A notification could not be delivered."""


class Interrupted(SpendwatchError):
    """The daemon is stopping: the work stopped at a safe point (nothing half-written)."""
