"""One daemon per store: the ``SingletonLock`` file beside the store, and the error when it is held.

The lock file's name lives in ``store.locks`` (snapshot restores take the same lock).
"""

from __future__ import annotations

from pathlib import Path

from spendwatch.errors import StoreAccessError, UserError
from spendwatch.store.locks import LockTimeout, SingletonLock, daemon_lock_path


class AlreadyRunning(UserError):
    """Another daemon holds this store."""


def lock_path(store_path: Path) -> Path:
    return daemon_lock_path(store_path)


def acquire_singleton(store_path: Path) -> SingletonLock:
    from spendwatch.store import describe_os_error

    lock = SingletonLock(lock_path(store_path))
    try:
        store_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreAccessError(f"store {store_path}: {describe_os_error(exc, store_path.parent)}") from None
    try:
        lock.acquire()
    except OSError as exc:
        raise StoreAccessError(f"store {store_path}: {describe_os_error(exc, lock.path)}") from None
    except LockTimeout as exc:
        raise AlreadyRunning(
            f"another spendwatch daemon (pid {exc.args[0] if exc.args else 'unknown'}) is already running on store "
            f"{store_path}; one daemon per store (lock file {lock.path})"
        ) from None
    return lock
