"""Exceptions raised by spendwatch.

The hierarchy, drawn once (as httpx does)::

    SpendwatchError                 anything spendwatch raises on purpose
    ├── UserError                   the user can fix it; the CLI prints one line and exits 2
    │   ├── ConfigError             a config file or value is wrong (names the file and key path)
    │   ├── InputError              an input file or argument is wrong (names the file, row, column)
    │   └── NotFoundError           an id the user named does not exist
    ├── StoreError                  the store cannot be opened, migrated or written (a bug: exit 1)
    │   └── StoreAccessError        … and the user can fix it (also a UserError: exit 2): its path,
    │       │                       permissions, a full disk, a newer schema
    │       ├── StoreBusyError      another process held the store for longer than the timeout
    │       └── StoreDamagedError   the file is truncated or corrupt (``spendwatch store restore``)
    ├── SourceError                 a collector failed (API unreachable or failing: exit 1)
    │   ├── PermissionDeniedError   the credentials lack a permission (names it)
    │   └── MalformedAnswerError    the API answered data that cannot be right (also an InputError:
    │                               exit 2, as a bad file is): no number, no currency, an odd period
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


class StoreAccessError(StoreError, UserError):
    """The store cannot be used for a reason the user can fix: its path, permissions, disk space."""


class StoreBusyError(StoreAccessError):
    """Another process held the store for longer than the lock timeout."""


class StoreDamagedError(StoreAccessError):
    """The store file is truncated or corrupt; a snapshot can bring it back."""


class SourceError(SpendwatchError):
    """A collector failed to fetch or parse its data."""


class PermissionDeniedError(SourceError):
    """The credentials lack a permission; the message names it."""


class MalformedAnswerError(SourceError, InputError):
    """A cloud API answered data that cannot be right; handled like a bad input file (exit 2)."""


class ActionError(SpendwatchError):
    """A kill-switch action failed or was refused."""


class DeliveryError(SpendwatchError):
    """A notification could not be delivered."""


class Interrupted(SpendwatchError):
    """The daemon is stopping: the work stopped at a safe point (nothing half-written)."""
