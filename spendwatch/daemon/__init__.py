"""``spendwatch run``: the daemon that runs every pass on its schedule, and what it serves.

``config`` (its settings, a leaf that ``spendwatch.config`` assembles), ``lock`` (one daemon per store),
``sd_notify`` (systemd), ``context`` (what jobs share), ``jobs`` (the passes), ``scheduler`` (start, run,
stop), ``health`` (/healthz, /readyz, /metrics), ``metrics`` and ``spend_metrics`` (the Prometheus
collectors). Nothing outside this package imports the scheduler at module level.
"""

from spendwatch.daemon.config import DaemonConfig, HealthConfig, SpendMetricsConfig
from spendwatch.daemon.context import DaemonContext
from spendwatch.daemon.jobs import (
    alerts_job,
    collect_job,
    detect_job,
    digest_job,
    guard_job,
    housekeeping,
    housekeeping_job,
    killswitch_job,
    snapshot_job,
)
from spendwatch.daemon.lock import AlreadyRunning, acquire_singleton, lock_path
from spendwatch.daemon.scheduler import build_scheduler, run_daemon
from spendwatch.daemon.sd_notify import SystemdNotifier

__all__ = [
    "AlreadyRunning",
    "DaemonConfig",
    "DaemonContext",
    "HealthConfig",
    "SpendMetricsConfig",
    "SystemdNotifier",
    "acquire_singleton",
    "alerts_job",
    "build_scheduler",
    "collect_job",
    "detect_job",
    "digest_job",
    "guard_job",
    "housekeeping",
    "housekeeping_job",
    "killswitch_job",
    "lock_path",
    "run_daemon",
    "snapshot_job",
]
