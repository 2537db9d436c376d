"""Collectors: every source type registers itself in ``SOURCES`` when its module is imported here."""

from spendwatch.collectors import focus, simulated
from spendwatch.collectors.aws import cost_explorer as aws_cost_explorer
from spendwatch.collectors.aws import cur as aws_cur
from spendwatch.collectors.aws import jobs as aws_jobs
from spendwatch.collectors.base import SOURCES, Batch, CollectWindow, CostBatch, JobBatch, Problem, Source, SourceConfig
from spendwatch.collectors.gcp import billing as gcp_billing
from spendwatch.collectors.gcp import export as gcp_export
from spendwatch.collectors.gcp import jobs as gcp_jobs
from spendwatch.collectors.k8s import jobs as k8s_jobs
from spendwatch.collectors.k8s import opencost

__all__ = [
    "SOURCES",
    "Batch",
    "CollectWindow",
    "CostBatch",
    "JobBatch",
    "Problem",
    "Source",
    "SourceConfig",
    "aws_cost_explorer",
    "aws_cur",
    "aws_jobs",
    "focus",
    "gcp_billing",
    "gcp_export",
    "gcp_jobs",
    "k8s_jobs",
    "opencost",
    "simulated",
]
