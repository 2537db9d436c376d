"""systemd's ``sd_notify`` protocol: readiness, watchdog pings and status for ``Type=notify`` units."""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("spendwatch.daemon")


class SystemdNotifier:
    """``sd_notify``: datagrams to ``$NOTIFY_SOCKET`` (READY=1, WATCHDOG=1, STATUS=…, STOPPING=1).

    A no-op when the variable is unset (not under systemd ``Type=notify``).
    """

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        watchdog_usec = env.get("WATCHDOG_USEC", "")
        watchdog_pid = env.get("WATCHDOG_PID", "")
        wanted = watchdog_usec.isdigit() and (not watchdog_pid or watchdog_pid == str(os.getpid()))
        self.watchdog_interval: float | None = int(watchdog_usec) / 2e6 if wanted else None

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, *states: str) -> bool:
        if not self.address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(states).encode(), self.address)
        except OSError as exc:
            log.warning("sd_notify to %s failed: %s", self.address, exc)
            return False
        return True
