"""Helpers every job source shares: who owns a job (from its labels), and job records as a JOB_SCHEMA table.

A leaf of ``spendwatch.collectors``: the GCP and Kubernetes job sources import it, it imports only the schema.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from spendwatch.store.schema import JOB_SCHEMA


def owner_of(
    labels: dict[str, str] | None, owner_tags: list[str], fallback: tuple[str | None, str] | None = None
) -> tuple[str | None, str | None]:
    """The owner from the first owner label present, else ``fallback`` (value, how we know)."""
    for key in owner_tags:
        value = (labels or {}).get(key)
        if value:
            return value, f"label:{key}"
    if fallback is not None and fallback[0]:
        return fallback[0], fallback[1]
    return None, None


def jobs_table(records: list[dict[str, Any]]) -> pa.Table:
    """Job records (dicts keyed by JOB_SCHEMA names; missing keys are null) as a JOB_SCHEMA table."""
    rows = []
    for record in records:
        row = {name: record.get(name) for name in JOB_SCHEMA.names}
        labels = row.get("labels")
        row["labels"] = list(labels.items()) if isinstance(labels, dict) and labels else None
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=JOB_SCHEMA)
