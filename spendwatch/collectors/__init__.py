"""Collectors: every source type registers itself in ``SOURCES`` when its module is imported here."""

from spendwatch.collectors import aws, aws_cur, aws_jobs, focus, gcp, gcp_billing, gcp_jobs, opencost, simulated
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
    "aws",
    "aws_cur",
    "aws_jobs",
    "focus",
    "gcp",
    "gcp_billing",
    "gcp_jobs",
    "opencost",
    "simulated",
]
