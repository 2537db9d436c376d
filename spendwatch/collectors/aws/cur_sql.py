"""The SQL that turns AWS billing exports into spendwatch cost lines, for DuckDB and for Athena.

One reduction, written once, runs in two engines: DuckDB over the export files (the direct S3 path)
and Athena (Trino) over the CUR table (the pushdown path). It has two stages:

1. **group** (portable SQL, runs where the data is): AWS columns → canonical columns, grouped to the
   storage grain. Only a handful of functions differ between the engines (map access); everything
   else is the common subset of DuckDB and Trino SQL.
2. **finish** (DuckDB, always local): the grouped rows of every file (or of the Athena result) are
   merged, tags are assembled into the ``tags`` map, owner and job are derived, periods are clamped
   to the billing period (:mod:`spendwatch.collectors.aws.cur_finish`). Because the finish stage is
   shared, the direct and the pushdown paths give the same store result on the same data.

Three layouts are understood, detected from the column names (``aws_cur_columns``):

* ``cur`` — CUR 2.0 (``line_item_usage_start_date`` …, ``resource_tags`` map) and legacy CUR in
  Parquet (same snake_case names, one ``resource_tags_user_<key>`` column per tag);
* ``cur1-csv`` — legacy CUR CSV (``lineItem/UsageStartDate``, ``resourceTags/user:owner``), renamed
  to the snake_case names first;
* ``focus`` — the FOCUS 1.x export of AWS Data Exports (``BilledCost``, ``ChargePeriodStart`` …).

**Storage grain** (see docs/aws.md): hour (or day) × payer × account × service × usage type × region ×
resource × charge category × frequency × currency × the kept tag values. ``resources: top`` keeps the
id of the period's N most expensive resources and folds the long tail into an empty resource, which is
what keeps a 20M-line month to a few hundred thousand stored rows.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal

from spendwatch.collectors.aws.charges import category_sql, charge_of, frequency_sql
from spendwatch.collectors.aws.cur_columns import (
    CUR_COLUMNS,
    CUR_REQUIRED,
    FOCUS_COLUMNS,
    FOCUS_REQUIRED,
    Columns,
    Layout,
    detect_columns,
    literal,
    quote,
    snake,
    tag_candidates,
)
from spendwatch.store.schema import CHARGE_CATEGORIES, CHARGE_FREQUENCIES

# Re-exported: the column detection used to live here and is still imported from here.
__all__ = [
    "CUR_COLUMNS",
    "CUR_REQUIRED",
    "FOCUS_COLUMNS",
    "FOCUS_REQUIRED",
    "GROUP_KEYS",
    "GROUP_VALUES",
    "Columns",
    "CurSql",
    "Dialect",
    "Grain",
    "Layout",
    "Period",
    "Resources",
    "SqlParams",
    "charge_sql",
    "detect_columns",
    "grouped_sql",
    "kept_tag_keys",
    "literal",
    "quote",
    "snake",
    "tag_candidates",
]

Dialect = Literal["duckdb", "trino"]
Period = Literal["hourly", "daily"]
Resources = Literal["all", "top", "none"]

# Columns of the grouped stage, in order (tag_0 … tag_n follow).
GROUP_KEYS = (
    "period_start",
    "billing_account_id",
    "sub_account_id",
    "product_code",
    "service_name",
    "sku_id",
    "region_id",
    "resource_id",
    "charge_category",
    "charge_frequency",
    "billing_currency",
)
GROUP_VALUES = (
    "period_end",
    "sub_account_name",
    "service_category",
    "charge_description",
    "billed_cost",
    "effective_cost",
    "list_cost",
    "is_estimated",
)

GROUPED_TYPES = {
    "period_start": "TIMESTAMP",
    "period_end": "TIMESTAMP",
    "billed_cost": "DOUBLE",
    "effective_cost": "DOUBLE",
    "list_cost": "DOUBLE",
    "is_estimated": "BOOLEAN",
    "line_items": "BIGINT",
    "dim_id": "BIGINT",
}
"""DuckDB types of the grouped rows' columns that are not text (the loader's ``partials``, ``narrow``, and
the Athena pushdown's CSV result read back)."""

_MARK = re.compile("\x1f(\\d+)\x1f")


class SqlParams:
    """Values that go to Athena as ``ExecutionParameters`` instead of into the SQL text.

    ``mark`` returns a placeholder token and remembers the value (an SQL literal, as Athena wants
    them: ``'2026-11'``, ``1000``); ``bind`` turns the finished SQL's tokens into ``?`` in the order
    they appear in the text and returns the matching parameter list, so however the SQL was composed
    the n-th ``?`` gets the n-th value.
    """

    def __init__(self) -> None:
        self._values: list[str] = []

    def mark(self, sql_literal: str) -> str:
        self._values.append(sql_literal)
        return f"\x1f{len(self._values) - 1}\x1f"

    def text(self, value: str) -> str:
        return self.mark(literal(value))

    def bind(self, sql: str) -> tuple[str, list[str]]:
        ordered: list[str] = []

        def placeholder(match: re.Match[str]) -> str:
            ordered.append(self._values[int(match.group(1))])
            return "?"

        return _MARK.sub(placeholder, sql), ordered


# The line item types of nearly every CUR line, matched exactly first: a plain CASE on them is ~5x
# cheaper per line than the squashing regular expression that catches every other spelling.
_COMMON_LINE_ITEM_TYPES = (
    "Usage",
    "DiscountedUsage",
    "SavingsPlanCoveredUsage",
    "SavingsPlanNegation",
    "SavingsPlanRecurringFee",
    "Fee",
    "RIFee",
    "Tax",
    "Credit",
    "Refund",
)


def charge_sql(column: str, index: int) -> str:
    """Charge category (``index`` 0) or frequency (1) of a line item type column, fast path first."""
    arms = " ".join(f"WHEN {literal(t)} THEN {literal(charge_of(t)[index])}" for t in _COMMON_LINE_ITEM_TYPES)
    fallback = category_sql(column) if index == 0 else frequency_sql(column)
    return f"(CASE {column} {arms} ELSE {fallback} END)"


@dataclass(frozen=True)
class Grain:
    period: Period = "hourly"
    resources: Resources = "top"
    top_resources: int = 1000


class CurSql:
    """Builds the group-stage SQL for one source of columns in one dialect."""

    def __init__(
        self,
        columns: Columns,
        tag_keys: Sequence[str],
        grain: Grain,
        dialect: Dialect,
        *,
        map_keys: set[str] | None = None,
        params: SqlParams | None = None,
        constants: dict[str, str | None] | None = None,
    ) -> None:
        self.columns = columns
        self.tag_keys = list(tag_keys)
        self.grain = grain
        self.dialect = dialect
        # The keys the tag map actually holds (when known): spellings it lacks are not looked up.
        self.map_keys = map_keys
        # Text columns known (from Parquet statistics) to hold one value, or only NULLs, on every line
        # of the source: a constant costs nothing per line, in the grouping least of all.
        self.constants = constants or {}
        # Trino (Athena): every value that comes from configuration is an execution parameter.
        self.params = params if params is not None else (SqlParams() if dialect == "trino" else None)

    def value(self, text: str) -> str:
        """A string value from configuration: a parameter for Athena, a quoted literal for DuckDB."""
        return self.params.text(text) if self.params is not None else literal(text)

    # -- canonical expressions ---------------------------------------------------------------

    def _col(self, name: str, kind: str = "text") -> str:
        source = self.columns.names.get(name)
        if source is None:
            return {"num": "CAST(NULL AS DOUBLE)", "ts": "CAST(NULL AS TIMESTAMP)"}.get(kind, "CAST(NULL AS VARCHAR)")
        if kind == "text":
            if source in self.constants:
                value = self.constants[source]
                return "CAST(NULL AS VARCHAR)" if value is None else f"NULLIF({literal(value)}, '')"
            if self.dialect == "trino":
                # No TRIM (nor in DuckDB): both paths must give the same store result on the same data.
                return f"NULLIF(CAST({quote(source)} AS VARCHAR), '')"
            return f"NULLIF({quote(source)}, '')"  # DuckDB: typed_relation already made it text
        return quote(source)

    def _map_get(self, column: str, key: str) -> str:
        if self.dialect == "trino":
            return f"element_at({quote(column)}, {self.value(key)})"
        # The key's position in the map's key list, then the value there: the same first match as
        # ``map[key]``, at half its cost per line (the grouping pass's most expensive lookups).
        return f"map_values({quote(column)})[list_position(map_keys({quote(column)}), {self.value(key)})]"

    def _json_get(self, column: str, key: str) -> str:
        path = self.value('$."' + key.replace('"', '\\"') + '"')
        return (
            f"json_extract_scalar({quote(column)}, {path})"
            if self.dialect == "trino"
            else (f"json_extract_string({quote(column)}, {path})")
        )

    def _tag_sources(self, key: str) -> list[tuple[str, str]]:
        """Where tag ``key`` can be found: ("column", name) or ("map", spelling), first match wins."""
        sources: list[tuple[str, str]] = []
        for spelling in tag_candidates(key):
            if spelling in self.columns.tag_columns:
                sources.append(("column", self.columns.tag_columns[spelling]))
            if self.columns.tag_map is not None and (self.map_keys is None or spelling in self.map_keys):
                sources.append(("map", spelling))
        return sources

    def tag_indices(self) -> list[int]:
        """The configured tag keys this source can hold at all; the others are NULL on every line."""
        return [i for i, key in enumerate(self.tag_keys) if self._tag_sources(key)]

    def tag_value(self, key: str) -> str:
        """The value of tag ``key`` (any spelling the export uses), or NULL."""
        options: list[str] = []
        for kind, name in self._tag_sources(key):
            if kind == "column":
                options.append(f"NULLIF(TRIM(CAST({quote(name)} AS VARCHAR)), '')")
            else:
                assert self.columns.tag_map is not None
                getter = self._json_get if self.columns.tag_map_is_json else self._map_get
                options.append(f"NULLIF({getter(self.columns.tag_map, name)}, '')")
        if not options:
            return "CAST(NULL AS VARCHAR)"
        return options[0] if len(options) == 1 else f"coalesce({', '.join(options)})"

    def canonical(self) -> dict[str, str]:
        """Canonical column → expression over the source columns."""
        if self.columns.layout == "focus":
            return self._focus()
        return self._cur()

    @property
    def has_split(self) -> bool:
        """Whether the source has EKS split cost allocation data (pod lines with their own cost)."""
        names = self.columns.names
        return (
            self.columns.layout == "cur"
            and "split_line_item_parent_resource_id" in names
            and "split_line_item_split_cost" in names
        )

    def relation(self, source: str) -> str:
        """``source``, with split cost allocation data each pod line twice (see ``_split``)."""
        return f"{source} CROSS JOIN (VALUES (0), (1)) AS k8s_twin(twin)" if self.has_split else source

    def _split(self, exprs: dict[str, str]) -> dict[str, str]:
        """EKS split cost allocation: a pod line carries its share of its node, which its node's line still holds.

        Each pod line is read twice (``twin`` 0 and 1): as itself, costing its split + unused cost (net
        of discounts for the effective cost), and as a twin on the parent node's resource id, without
        tags, costing minus the same. The node's cost thus moves to the pods that used it, and every total
        stays the bill's own: whatever AWS's rounding, +x - x adds nothing.
        """
        parent = self._col("split_line_item_parent_resource_id")
        split, unused = self._col("split_line_item_split_cost", "num"), self._col("split_line_item_unused_cost", "num")
        net_split = self._col("split_line_item_net_split_cost", "num")
        net_unused = self._col("split_line_item_net_unused_cost", "num")
        share = f"(coalesce({split}, 0) + coalesce({unused}, 0))"
        net = f"(coalesce({net_split}, {split}, 0) + coalesce({net_unused}, {unused}, 0))"
        pod = f"{parent} IS NOT NULL"
        out = dict(exprs)
        for name, amount in (("billed_cost", share), ("effective_cost", net)):
            own = exprs[name]
            out[name] = (
                f"(CASE WHEN NOT ({pod}) THEN {own} WHEN twin = 0 THEN coalesce({own}, 0) + {amount} "
                f"ELSE -{amount} END)"
            )
        out["resource_id"] = f"(CASE WHEN twin = 1 THEN {parent} ELSE {exprs['resource_id']} END)"
        out["charge_description"] = (
            f"(CASE WHEN twin = 1 THEN 'EKS split cost allocated to pods' ELSE {exprs['charge_description']} END)"
        )
        out["list_cost"] = f"(CASE WHEN twin = 1 THEN NULL ELSE {exprs['list_cost']} END)"
        return out

    def _cur(self) -> dict[str, str]:
        exprs = self._cur_plain()
        return self._split(exprs) if self.has_split else exprs

    def _cur_plain(self) -> dict[str, str]:
        line_type = self._col("line_item_line_item_type")
        unblended = self._col("line_item_unblended_cost", "num")
        product = self._col("product_product_name")
        if self.columns.product_map is not None:
            getter = self._json_get if self.columns.product_map_is_json else self._map_get
            product = f"coalesce({product}, NULLIF({getter(self.columns.product_map, 'product_name')}, ''))"
        return {
            "usage_start": self._col("line_item_usage_start_date", "ts"),
            "usage_end": self._col("line_item_usage_end_date", "ts"),
            "billing_account_id": self._col("bill_payer_account_id"),
            "sub_account_id": self._col("line_item_usage_account_id"),
            "sub_account_name": self._col("line_item_usage_account_name"),
            "product_code": f"coalesce({self._col('line_item_product_code')}, {self._col('product_servicecode')})",
            "service_name": f"coalesce({product}, {self._col('line_item_product_code')})",
            "service_category": "CAST(NULL AS VARCHAR)",
            "sku_id": self._col("line_item_usage_type"),
            "region_id": f"coalesce({self._col('product_region_code')}, {self._col('product_region')})",
            "resource_id": self._col("line_item_resource_id"),
            "charge_category": charge_sql(line_type, 0),
            "charge_frequency": charge_sql(line_type, 1),
            "charge_description": self._col("line_item_line_item_description"),
            "billed_cost": unblended,
            "effective_cost": self._effective(line_type, unblended),
            "list_cost": self._col("pricing_public_on_demand_cost", "num"),
            "billing_currency": self._col("line_item_currency_code"),
            "is_estimated": f"({self._col('bill_invoice_id')} IS NULL)",
        }

    def _effective(self, line_type: str, unblended: str) -> str:
        """Amortised cost, as AWS computes it for Cost Explorer's AmortizedCost (zero-safe when absent)."""
        sp_effective = self._col("savings_plan_savings_plan_effective_cost", "num")
        commitment = self._col("savings_plan_total_commitment_to_date", "num")
        used = self._col("savings_plan_used_commitment", "num")
        ri_effective = self._col("reservation_effective_cost", "num")
        ri_unused = (
            f"coalesce({self._col('reservation_unused_amortized_upfront_fee_for_billing_period', 'num')}, 0) + "
            f"coalesce({self._col('reservation_unused_recurring_fee', 'num')}, 0)"
        )
        ri_arn = self._col("reservation_reservation_a_r_n")
        return (
            f"(CASE {line_type} "
            f"WHEN 'SavingsPlanCoveredUsage' THEN coalesce({sp_effective}, {unblended}) "
            f"WHEN 'SavingsPlanRecurringFee' THEN coalesce({commitment} - {used}, {unblended}) "
            f"WHEN 'SavingsPlanNegation' THEN 0 "
            f"WHEN 'SavingsPlanUpfrontFee' THEN 0 "
            f"WHEN 'DiscountedUsage' THEN coalesce({ri_effective}, {unblended}) "
            f"WHEN 'RIFee' THEN {ri_unused} "
            f"ELSE (CASE WHEN {line_type} = 'Fee' AND {ri_arn} IS NOT NULL THEN 0 ELSE {unblended} END) END)"
        )

    def _focus(self) -> dict[str, str]:
        billed = self._col("billedcost", "num")
        category = self._col("chargecategory")
        return {
            "usage_start": self._col("chargeperiodstart", "ts"),
            "usage_end": self._col("chargeperiodend", "ts"),
            "billing_account_id": self._col("billingaccountid"),
            "sub_account_id": self._col("subaccountid"),
            "sub_account_name": self._col("subaccountname"),
            "product_code": "CAST(NULL AS VARCHAR)",
            "service_name": self._col("servicename"),
            "service_category": self._col("servicecategory"),
            "sku_id": f"coalesce({self._col('xusagetype')}, {self._col('skuid')})",
            "region_id": self._col("regionid"),
            "resource_id": self._col("resourceid"),
            # The FOCUS values the focus source accepts (spendwatch.store.schema), matched case-insensitively.
            "charge_category": _choice_sql(category, CHARGE_CATEGORIES, "'Adjustment'"),
            "charge_frequency": _choice_sql(self._col("chargefrequency"), CHARGE_FREQUENCIES, "NULL"),
            "charge_description": self._col("chargedescription"),
            "billed_cost": billed,
            "effective_cost": f"coalesce({self._col('effectivecost', 'num')}, {billed})",
            "list_cost": self._col("listcost", "num"),
            "billing_currency": self._col("billingcurrency"),
            "is_estimated": f"({self._col('invoiceid')} IS NULL)" if "invoiceid" in self.columns.names else "NULL",
        }

    # -- the group stage ---------------------------------------------------------------------

    def normalised(self, source: str, where: str | None = None) -> str:
        """SELECT of the canonical columns and the ``tag_indices`` tags (``tag_<i>``) from ``source``.

        Tags the source cannot hold are left out rather than carried as NULL through the grouping
        (the partials table fills them in as NULL).
        """
        exprs = self.canonical()
        select = [f"{expr} AS {name}" for name, expr in exprs.items()]
        select += [f"{expr} AS tag_{i}" for i, expr in self.tag_exprs()]
        return f"SELECT {', '.join(select)} {self.lines_from(source, where)}"

    def tag_exprs(self) -> list[tuple[int, str]]:
        """(i, expression) of each ``tag_<i>`` this source can hold, per line."""
        tags = [(i, self.tag_value(self.tag_keys[i])) for i in self.tag_indices()]
        if self.has_split:  # a pod line's twin on its node carries no tag: it is nobody's workload
            tags = [(i, f"(CASE WHEN twin = 1 THEN NULL ELSE {expr} END)") for i, expr in tags]
        return tags

    def lines_from(self, source: str, where: str | None = None) -> str:
        """``FROM … WHERE …`` of the source's lines (with split cost allocation, each pod line twice)."""
        where = self._twin_filter(where)
        clause = f" WHERE {where}" if where else ""
        return f"FROM {self.relation(source)}{clause}"

    def _twin_filter(self, where: str | None) -> str | None:
        if not self.has_split:
            return where
        twins = f"(twin = 0 OR {self._col('split_line_item_parent_resource_id')} IS NOT NULL)"
        return f"({where}) AND {twins}" if where else twins

    def absent(self) -> set[str]:
        """Canonical columns this source does not have at all (a NULL constant on every line)."""
        return {name for name, expr in self.canonical().items() if expr.startswith("CAST(NULL AS ")}

    def resource_totals(self, source: str, where: str | None = None) -> str:
        """Per-resource absolute cost straight from ``source``: reads two columns, not the whole line."""
        exprs = self.canonical()
        resource, cost = exprs["resource_id"], exprs["billed_cost"]
        where = self._twin_filter(where)
        clause = f" AND ({where})" if where else ""
        return (
            f"SELECT {resource} AS resource_id, sum(abs({cost})) AS total FROM {self.relation(source)} "
            f"WHERE {resource} IS NOT NULL{clause} GROUP BY 1"
        )


def _choice_sql(column: str, allowed: Sequence[str], otherwise: str) -> str:
    arms = " ".join(f"WHEN {literal(value.lower())} THEN {literal(value)}" for value in allowed)
    return f"(CASE lower({column}) {arms} ELSE {otherwise} END)"


def grouped_sql(
    normalised: str,
    grain: Grain,
    tags: Sequence[int],
    *,
    top: str | None = None,
    count: bool = False,
    absent: Collection[str] = (),
) -> str:
    """The group stage over ``normalised``; ``top`` is a relation of kept resource ids (``resources: top``).

    ``tags`` are the indices of the ``tag_<i>`` columns ``normalised`` has (``CurSql.tag_indices``).
    ``absent`` names value columns the source does not have (``CurSql.absent``): they come out as
    NULL instead of being aggregated line by line. ``count`` adds ``line_items`` (how many export
    lines each group holds).
    """
    unit = "hour" if grain.period == "hourly" else "day"
    if grain.resources == "none":
        resource = "CAST(NULL AS VARCHAR)"
    elif grain.resources == "top":
        if top is None:
            raise ValueError("resources: top needs the relation of kept resource ids")
        resource = f"(CASE WHEN resource_id IN (SELECT resource_id FROM {top}) THEN resource_id ELSE NULL END)"
    else:
        resource = "resource_id"
    keys = {
        "period_start": f"date_trunc('{unit}', usage_start)",
        "billing_account_id": "billing_account_id",
        "sub_account_id": "sub_account_id",
        "product_code": "product_code",
        "service_name": "service_name",
        "sku_id": "sku_id",
        "region_id": "region_id",
        "resource_id": resource,
        "charge_category": "charge_category",
        "charge_frequency": "charge_frequency",
        "billing_currency": "billing_currency",
    }
    tag_cols = [f"tag_{i}" for i in tags]
    inner_select = [f"{expr} AS {name}" for name, expr in keys.items()]
    inner_select += [
        "usage_end",
        "sub_account_name",
        "service_category",
        "charge_description",
        "billed_cost",
        "effective_cost",
        "list_cost",
        "is_estimated",
        *tag_cols,
    ]
    group_cols = [*keys, *tag_cols]
    values = group_values(absent, count=count)
    return (
        f"SELECT {', '.join(group_cols)}, {', '.join(values)} "
        f"FROM (SELECT {', '.join(inner_select)} FROM ({normalised}) AS n) AS k "
        f"GROUP BY {', '.join(group_cols)}"
    )


def group_values(absent: Collection[str], *, count: bool) -> list[str]:
    """The grouping's aggregates of the value columns (``GROUP_VALUES``, and ``line_items`` with ``count``).

    ``absent`` value columns are a NULL constant instead of an aggregate read line by line.
    """
    aggregates = {
        "sub_account_name": ("arbitrary", "VARCHAR"),
        "service_category": ("arbitrary", "VARCHAR"),
        "charge_description": ("arbitrary", "VARCHAR"),
        "list_cost": ("sum", "DOUBLE"),
    }
    optional = {
        name: f"CAST(NULL AS {kind}) AS {name}" if name in absent else f"{function}({name}) AS {name}"
        for name, (function, kind) in aggregates.items()
    }
    values = [
        "max(usage_end) AS period_end",
        optional["sub_account_name"],
        optional["service_category"],
        optional["charge_description"],
        "sum(billed_cost) AS billed_cost",
        "sum(effective_cost) AS effective_cost",
        optional["list_cost"],
        "bool_or(is_estimated) AS is_estimated",
    ]
    if count:
        values.append("count(*) AS line_items")
    return values


def kept_tag_keys(owner_tags: Sequence[str], job_tags: Sequence[str], keep: Sequence[str]) -> list[str]:
    """The tag keys stored with each line: owner and job keys first, then ``keep``.

    Keys that name the same export column (``job`` and ``user:job`` both read ``user_job``) are kept
    once, under the first name: the same value is not stored twice.
    """
    out: list[str] = []
    seen: set[str] = set()
    for key in [*owner_tags, *job_tags, *keep]:
        spellings = set(tag_candidates(key))
        if key in out or spellings & seen:
            continue
        out.append(key)
        seen |= spellings
    return out
