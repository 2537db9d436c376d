"""``spendwatch doctor``: can this deployment do its job, and what exactly is missing?

``base`` holds what the checks share (findings, report, context, permission needs); ``aws``, ``gcp`` and
``k8s`` are the provider checks and import only ``base``; ``core`` runs them all in order; ``cli`` is the
command, which imports ``core`` only when it runs.
"""

from spendwatch.doctor.base import DoctorContext, DoctorReport, Finding, PermissionNeed
from spendwatch.doctor.core import format_report, run_doctor

__all__ = ["DoctorContext", "DoctorReport", "Finding", "PermissionNeed", "format_report", "run_doctor"]
