"""What every source shares: its config base, the batches it yields, and the context it runs in.

A source never writes to the store. It yields batches; the collection runner (``spendwatch.collect``)
writes each in its own transaction, so one bad period or file costs that period only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar

import pyarrow as pa
from pydantic import Field, field_validator

from spendwatch.clock import Clock
from spendwatch.config_types import Duration, Name
from spendwatch.errors import Interrupted
from spendwatch.plugins import Plugin, Registry, StrictModel
from spendwatch.store import CostLinesFile, Store

DEFAULT_OWNER_TAGS = [
    "owner",
    "user:owner",
    "spendwatch:owner",
    "aws:createdBy",
    "created-by",
    "created_by",
]
DEFAULT_JOB_TAGS = [
    "job",
    "job_id",
    "user:job",
    "spendwatch:job",
    "sagemaker:training-job-name",
    "aws:sagemaker:training-job-name",
    "aws:elasticmapreduce:job-flow-id",
    "glue:job-name",
    "goog-dataproc-cluster-name",
    "goog-dataproc-batch-id",
    "vertex-ai-custom-job",
]


class SourceConfig(StrictModel):
    """Settings every source has; each source type adds its own keys."""

    name: Name = Field(description="unique name of this source; cost lines are replaced per source")
    type: str
    enabled: bool = True
    every: Duration = Field(default=timedelta(hours=1), description="how often the daemon collects")
    backfill: Duration = Field(default=timedelta(days=90), description="how far back the first collection reaches")
    settle_lag: Duration = Field(
        default=timedelta(days=1),
        description="data newer than this is still incomplete: stored, but not scored yet",
    )
    owner_tags: list[str] = Field(
        default_factory=lambda: list(DEFAULT_OWNER_TAGS),
        description="tag/label keys that name a line's owner, first match wins",
    )
    job_tags: list[str] = Field(
        default_factory=lambda: list(DEFAULT_JOB_TAGS),
        description="tag/label keys that name the job a line belongs to, first match wins",
    )

    @field_validator("every")
    @classmethod
    def _at_least_a_second(cls, value: timedelta) -> timedelta:
        # The scheduler would round 0 up to 1s and hammer the API; say so instead.
        if value < timedelta(seconds=1):
            raise ValueError("must be at least 1s")
        return value


@dataclass(frozen=True)
class CostBatch:
    """Cost lines that replace everything the source stored for charge periods in [start, end)."""

    period_start: datetime
    period_end: datetime
    lines: pa.Table | CostLinesFile  # a file: a reduction's finished lines, read by the store directly
    label: str
    fingerprint: str | None = None


@dataclass(frozen=True)
class JobBatch:
    """Job records to insert or update by (platform, job_id)."""

    jobs: pa.Table
    label: str


@dataclass(frozen=True)
class Problem:
    """A part of the source that could not be read (one period, one file); the rest goes on."""

    label: str
    message: str
    # True when the user can fix it (a malformed file or manifest): the CLI then exits 2, not 1.
    user_error: bool = False


Batch = CostBatch | JobBatch | Problem
ProgressCallback = Callable[[str], None]


def _no_progress(_: str) -> None:
    return None


@dataclass
class SourceContext:
    """Everything a source may touch outside itself, passed in so tests can swap any of it."""

    clock: Clock
    store: Store
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("spendwatch.collect"))
    progress: ProgressCallback = _no_progress
    # External clients by name (e.g. "boto3_session", "bigquery_client"); tests pass doubles here.
    clients: dict[str, Any] = field(default_factory=dict)
    # Counters a source reports (API calls, bytes billed …); the runner exports them as metrics.
    counters: dict[str, float] = field(default_factory=dict)
    # Set when the daemon is stopping (SIGTERM). Sources never write to the store, so any point where
    # they count a request is a safe point to give up: the runner keeps the periods already committed.
    stop: threading.Event | None = None

    def count(self, name: str, amount: float = 1.0) -> None:
        self.counters[name] = self.counters.get(name, 0.0) + amount
        self.checkpoint()

    def checkpoint(self) -> None:
        """Raise ``Interrupted`` if the daemon is stopping; sources may call it between long steps."""
        if self.stop is not None and self.stop.is_set():
            raise Interrupted("the daemon is stopping")


@dataclass(frozen=True)
class CollectWindow:
    """The time range a run asks for: a backfill start and the moment of the run."""

    since: datetime
    until: datetime


class Source(Plugin):
    """A collector: yields cost and job batches for a window."""

    config_model: ClassVar[type[SourceConfig]] = SourceConfig

    def __init__(self, config: SourceConfig, context: SourceContext) -> None:
        self.config = config
        self.context = context

    @property
    def name(self) -> str:
        return self.config.name

    def collect(self, window: CollectWindow) -> Iterator[Batch]:
        raise NotImplementedError


SOURCES: Registry[type[Source]] = Registry("source type", group="spendwatch.sources")
