"""Collectors: every source type registers itself in ``SOURCES`` when its module is imported here."""

from spendwatch.collectors import focus, simulated
from spendwatch.collectors import gcp, gcp_billing, gcp_jobs  # noqa: F401  (GCP sources)
from spendwatch.collectors import aws, aws_cur, aws_jobs  # noqa: F401  (AWS sources)
from spendwatch.collectors.base import SOURCES, Batch, CollectWindow, CostBatch, JobBatch, Problem, Source, SourceConfig

__all__ = [
    "SOURCES",
    "Batch",
    "CollectWindow",
    "CostBatch",
    "JobBatch",
    "Problem",
    "Source",
    "SourceConfig",
    "focus",
    "simulated",
]
