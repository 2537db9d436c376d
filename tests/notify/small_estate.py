"""A small, exact estate for budget, team and figure tests: a few lines a day, every one known.

Daily usage from ``START`` to the report day, with a weekly rhythm and a little seeded noise:

========================  ============  ==========  ===========================  ========  =========
line                      account       owner       tags                         currency  per day
========================  ============  ==========  ===========================  ========  =========
ML training               210987654321  ben         team ml-research, cc-41      USD       ~1,000
ML notebooks (GCP)        ml-eu         ana         team ml-research             EUR       ~200
serving                   456789012345  kai         team serving                 USD       ~500
serving, Tokyo            jp-serving    kai         team serving                 JPY       ~30,000
sandbox                   567890123456  (none)      (none)                       USD       ~100
========================  ============  ==========  ===========================  ========  =========

plus a 3,000 USD Savings Plans purchase on the 1st of every month in the serving account.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import yaml

from spendwatch.config import Config, parse_config
from spendwatch.store import Store
from spendwatch.store.schema import COST_LINE_SCHEMA

START = date(2026, 8, 20)
REPORT_DAY = date(2026, 11, 3)
NOW = datetime(2026, 11, 4, 9, 0, tzinfo=UTC)  # the digest of the 4th reports on the 3rd
WEEKLY = (1.0, 1.04, 1.06, 1.03, 0.97, 0.6, 0.55)
PURCHASE = 3000.0


@dataclass(frozen=True)
class Line:
    provider: str
    account: str
    service: str
    owner: str | None
    tags: tuple[tuple[str, str], ...]
    currency: str
    level: float


LINES = (
    Line("aws", "210987654321", "Amazon SageMaker", "ben@example.com",
         (("team", "ml-research"), ("cost-center", "cc-41")), "USD", 1000.0),
    Line("gcp", "ml-eu", "Vertex AI", "ana@example.com", (("team", "ml-research"),), "EUR", 200.0),
    Line("aws", "456789012345", "Amazon EC2", "kai@example.com", (("team", "serving"),), "USD", 500.0),
    Line("gcp", "jp-serving", "Compute Engine", "kai@example.com", (("team", "serving"),), "JPY", 30000.0),
    Line("aws", "567890123456", "Amazon S3", None, (), "USD", 100.0),
)  # fmt: skip


def cost(line: Line, day: date) -> float:
    noise = np.random.default_rng([day.toordinal(), int(line.level)]).normal(0, 0.02)
    return round(line.level * WEEKLY[day.weekday()] * float(np.exp(noise)), 2)


def rows(until: date = REPORT_DAY) -> list[dict[str, Any]]:
    out = []
    day = START
    while day <= until:
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        for line in LINES:
            out.append(_row(line, start, cost(line, day), "Usage"))
        if day.day == 1:
            serving = LINES[2]
            out.append(_row(serving, start, PURCHASE, "Purchase", service="Savings Plans for AWS Compute usage"))
        day += timedelta(days=1)
    return out


def _row(line: Line, start: datetime, amount: float, category: str, service: str | None = None) -> dict[str, Any]:
    return {
        "provider": line.provider,
        "sub_account_id": line.account,
        "service_name": service or line.service,
        "charge_category": category,
        "charge_period_start": start,
        "charge_period_end": start + timedelta(days=1),
        "billed_cost": amount,
        "effective_cost": amount,
        "billing_currency": line.currency,
        "tags": list(line.tags),
        "owner": line.owner,
    }


def build(folder: Path, clock: Any, **sections: Any) -> tuple[Config, Store]:
    """A config (folder channel unless ``notify`` says otherwise) and a store holding ``rows()``."""
    data: dict[str, Any] = {
        "store": {"path": "small.duckdb"},
        "sources": [{"name": "bills", "type": "focus", "path": "unused", "settle_lag": "1h"}],
        "notify": {"channels": [{"name": "outbox", "type": "folder", "path": "outbox"}]},
        **sections,
    }
    path = folder / "spendwatch.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    config = parse_config(path.read_text(), path, environ={"SPENDWATCH_LINK_KEY": "k" * 48})
    store = Store(config.store.path, clock=clock)
    table = pa.Table.from_pylist(rows(), schema=COST_LINE_SCHEMA)
    first = datetime(START.year, START.month, START.day, tzinfo=UTC)
    store.replace_cost_lines("bills", first, first + timedelta(days=120), table)
    return config, store


def month_total(month: date, until: date = REPORT_DAY, *, currency: str, keep: Any = lambda row: True) -> float:
    """What the lines ``keep`` accepts cost in ``month`` up to ``until`` (every category), in ``currency``."""
    total = 0.0
    for row in rows(until):
        day = row["charge_period_start"].date()
        if day.replace(day=1) == month and row["billing_currency"] == currency and keep(row):
            total += row["effective_cost"]
    return total
