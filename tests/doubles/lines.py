"""Small, explicit cost-line tables for tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from spendwatch.store.schema import COST_LINE_SCHEMA, conform


def cost_lines(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows need ``day`` (a date string) or ``start``; everything else has a default."""
    filled = []
    for given in rows:
        row = dict(given)
        start = row.pop("start", None) or datetime.fromisoformat(row.pop("day")).replace(tzinfo=UTC)
        hours = row.pop("hours", 24)
        cost = row.pop("cost")
        filled.append(
            {
                "provider": "aws",
                "sub_account_id": "111111111111",
                "service_name": "Amazon EC2",
                "charge_category": "Usage",
                "billing_currency": "USD",
                "charge_period_start": start,
                "charge_period_end": start + timedelta(hours=hours),
                "billed_cost": cost,
                "effective_cost": cost,
                **row,
            }
        )
    table = pa.Table.from_pylist(filled)
    return conform(table, COST_LINE_SCHEMA)


def daily_series(start: str, costs: list[float], **fields: Any) -> list[dict[str, Any]]:
    first = datetime.fromisoformat(start).replace(tzinfo=UTC)
    return [{"start": first + timedelta(days=i), "cost": c, **fields} for i, c in enumerate(costs)]
