"""The DuckDB grouping pass with per-value work after the grouping, not once per line.

Most keys of the storage grain — account, service, usage type, region, charge category and
frequency, currency — are functions of a few text columns alone (``NULLIF``, ``coalesce``, the
charge CASE over the line item type). ``grouped_sql`` evaluates them on every line before grouping;
here the lines are grouped on those columns' raw values first, the key expressions then run once per
group, and the groups that became equal (``Usage`` and ``DiscountedUsage`` are both the charge
category ``Usage``; ``''`` and NULL are both NULL) are merged by a second, small grouping. The result
is the same rows as ``grouped_sql``.

Worth it when the grouping folds many lines into each row (``resources: top`` or ``none``: 20M lines
into ~1M groups, measured −0.7 CPU-s of 6.4 on the 20M-line month); with ``resources: all`` nearly
every line is its own group, so the second grouping would cost as much as the first, and
``grouped_sql`` is used instead.
"""

from __future__ import annotations

from spendwatch.collectors.aws.cur_columns import quote
from spendwatch.collectors.aws.cur_sql import CurSql, Grain

# Keys that can be computed per distinct value of the columns they read.
PER_VALUE_KEYS = (
    "billing_account_id",
    "sub_account_id",
    "product_code",
    "service_name",
    "sku_id",
    "region_id",
    "charge_category",
    "charge_frequency",
    "billing_currency",
)
_VALUES = {  # value column → (per-line aggregate, aggregate of the aggregates)
    "period_end": ("max(usage_end)", "max(period_end)"),
    "sub_account_name": ("arbitrary(sub_account_name)", "arbitrary(sub_account_name)"),
    "service_category": ("arbitrary(service_category)", "arbitrary(service_category)"),
    "charge_description": ("arbitrary(charge_description)", "arbitrary(charge_description)"),
    "billed_cost": ("sum(billed_cost)", "sum(billed_cost)"),
    "effective_cost": ("sum(effective_cost)", "sum(effective_cost)"),
    "list_cost": ("sum(list_cost)", "sum(list_cost)"),
    "is_estimated": ("bool_or(is_estimated)", "bool_or(is_estimated)"),
    "line_items": ("count(*)", "sum(line_items)"),
}
_KINDS = {"period_end": "TIMESTAMP", "list_cost": "DOUBLE"}


def _reads(cur: CurSql, expr: str) -> list[str] | None:
    """The source columns ``expr`` reads, or ``None`` if one is a map or JSON (no cheap raw value)."""
    columns = cur.columns
    nested = {c for c in (columns.tag_map, columns.product_map) if c is not None}
    nested |= set(columns.tag_columns.values())
    if "twin" in expr or any(quote(c) in expr for c in nested):
        return None
    return [name for name in dict.fromkeys(columns.names.values()) if quote(name) in expr]


def grouped_per_value_sql(cur: CurSql, source: str, grain: Grain, *, top: str | None, absent: set[str]) -> str:
    """The rows of ``grouped_sql(cur.normalised(source), grain, …, count=True)``, keys computed per group."""
    if grain.resources == "all":
        raise ValueError("resources: all groups every line alone; use grouped_sql")
    exprs = cur.canonical()
    unit = "hour" if grain.period == "hourly" else "day"
    later: dict[str, str] = {}  # key → expression over the raw columns, run once per group
    raw: dict[str, None] = {}
    for key in PER_VALUE_KEYS:
        reads = _reads(cur, exprs[key])
        if reads is not None:
            later[key] = exprs[key]
            raw.update(dict.fromkeys(reads))
    resource = "CAST(NULL AS VARCHAR)"
    if grain.resources == "top":
        if top is None:
            raise ValueError("resources: top needs the relation of kept resource ids")
        rid = exprs["resource_id"]
        resource = f"(CASE WHEN ({rid}) IN (SELECT resource_id FROM {top}) THEN ({rid}) ELSE NULL END)"
    tags = [f"tag_{i}" for i, _ in cur.tag_exprs()]
    keys = [
        f"date_trunc('{unit}', {exprs['usage_start']}) AS period_start",
        *(quote(column) for column in raw),
        *(f"{exprs[key]} AS {key}" for key in PER_VALUE_KEYS if key not in later),
        f"{resource} AS resource_id",
        *(f"{expr} AS tag_{i}" for i, expr in cur.tag_exprs()),
    ]
    line_values = [
        f"{exprs[name]} AS {name}" for name in ("usage_end", *(v for v in _VALUES if v in exprs and v not in absent))
    ]
    inner = (
        f"SELECT {', '.join(keys)}, {', '.join(_aggregate(name, 0, absent) for name in _VALUES)} "
        f"FROM (SELECT *, {', '.join(line_values)} {cur.lines_from(source)}) AS line GROUP BY ALL"
    )
    outer_keys = [
        "period_start",
        *(f"{later[key]} AS {key}" if key in later else key for key in PER_VALUE_KEYS),
        "resource_id",
        *tags,
    ]
    return (
        f"SELECT {', '.join(outer_keys)}, {', '.join(_aggregate(name, 1, absent) for name in _VALUES)} "
        f"FROM ({inner}) AS per_value GROUP BY ALL"
    )


def _aggregate(name: str, level: int, absent: set[str]) -> str:
    if name in absent:
        return f"CAST(NULL AS {_KINDS.get(name, 'VARCHAR')}) AS {name}"
    return f"{_VALUES[name][level]} AS {name}"
