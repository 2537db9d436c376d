"""The finish stage of the CUR reduction (DuckDB, always local): grouped rows become cost lines.

The grouped rows of every file (or of the Athena result) are merged, tags are assembled into the
``tags`` map, owner and job are derived, periods are clamped to the billing period. The group stage
is in :mod:`spendwatch.collectors.aws.cur_sql`; because this stage is shared, the direct and the
pushdown paths give the same store result on the same data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from spendwatch.collectors.aws.charges import service_category_sql, squash
from spendwatch.collectors.aws.cur_columns import literal
from spendwatch.collectors.aws.cur_sql import GROUP_KEYS


def finish_sql(
    partials: str,
    tag_keys: Sequence[str],
    owner_tags: Sequence[str],
    job_tags: Sequence[str],
    unit: str,
    present: set[int] | None = None,
    *,
    merge: bool = True,
    k8s: Mapping[str, Sequence[str]] | None = None,
    tag_values: str | None = None,
) -> str:
    """DuckDB: turn grouped rows into cost lines (tags map, owner, job, clamped periods).

    Expects ``$start``/``$end`` parameters: the billing period every line is clamped into.
    ``present`` lists the tag columns holding any value; the others are NULL everywhere and are left
    out of the map and the grouping (equivalent, and far cheaper with many configured tag keys).
    ``merge`` groups rows that share a key (partials from several scans, or lines clamped into the
    period); without it every row is one line already, and a projection does the same work cheaper.
    The tags map, owner and job depend on the tag values alone, so they are built once per distinct
    combination of tag values and joined on, not once per line; ``tag_values`` is a smaller relation
    holding every such combination (default: ``partials`` itself).
    """
    used = [i for i in range(len(tag_keys)) if present is None or i in present]
    tag_cols = [f"tag_{i}" for i in used]
    group = [k for k in GROUP_KEYS if k != "period_start"] + tag_cols
    start = f"least(greatest(period_start, CAST($start AS TIMESTAMP)), CAST($end AS TIMESTAMP) - INTERVAL 1 {unit})"

    def agg(function: str, column: str) -> str:
        return f"{function}({column})" if merge else column

    lines = f"""
        SELECT 'aws' AS provider, billing_account_id, sub_account_id, {agg("arbitrary", "sub_account_name")} AS sub_account_name,
               service_name,
               coalesce({agg("arbitrary", "service_category")}, {service_category_sql("product_code")}) AS service_category,
               sku_id, region_id, resource_id, CAST(NULL AS VARCHAR) AS resource_name,
               charge_category, charge_frequency, {agg("arbitrary", "charge_description")} AS charge_description,
               CAST(ps AS TIMESTAMPTZ) AS charge_period_start,
               CAST(greatest({agg("max", "period_end")}, ps + INTERVAL 1 {unit}) AS TIMESTAMPTZ) AS charge_period_end,
               {agg("sum", "billed_cost")} AS billed_cost, {agg("sum", "effective_cost")} AS effective_cost,
               {agg("sum", "list_cost")} AS list_cost,
               billing_currency, {agg("bool_or", "is_estimated")} AS is_estimated
               {"".join(f", {c}" for c in tag_cols)}
        FROM (SELECT *, {start} AS ps FROM {partials}) AS p
        {f"GROUP BY ps, {', '.join(group)}" if merge else ""}
    """  # noqa: E501
    # The k8s_* columns only when asked for (else conform() fills them in as NULL, as for every source).
    k8s_names = ("k8s_cluster", "k8s_namespace", "k8s_workload") if k8s else ()
    if not tag_cols:
        nulls = "".join(f", CAST(NULL AS VARCHAR) AS {name}" for name in k8s_names)
        return f"""
            SELECT *, CAST(NULL AS MAP(VARCHAR, VARCHAR)) AS tags, CAST(NULL AS VARCHAR) AS owner,
                   CAST(NULL AS VARCHAR) AS job_id{nulls}
            FROM ({lines}) AS l
        """
    index = {tag_keys[i]: i for i in used}
    owner = _first_of(owner_tags, index, principal=True)
    job = _first_of(job_tags, index, principal=False)
    k8s = k8s or {}
    columns = {name: _first_of(k8s.get(name, ()), index, principal=False) for name in k8s_names}
    k8s_owner = _first_of(k8s.get("owner", ()), index, principal=False)
    if k8s_owner != "CAST(NULL AS VARCHAR)":
        # A pod's owner comes from its workload's labels first; other lines keep their owner tags.
        namespace = columns["k8s_namespace"]
        owner = f"(CASE WHEN {namespace} IS NOT NULL THEN coalesce({k8s_owner}, {owner}) ELSE {owner} END)"
    derived = f"""
        SELECT {", ".join(tag_cols)}, {_tags_map(tag_keys, used)} AS tags, {owner} AS owner, {job} AS job_id
               {"".join(f", {expr} AS {name}" for name, expr in columns.items())}
        FROM (SELECT DISTINCT {", ".join(tag_cols)} FROM {tag_values or partials}) AS d
    """
    same = " AND ".join(f"l.{c} IS NOT DISTINCT FROM t.{c}" for c in tag_cols)
    return f"""
        SELECT l.* EXCLUDE ({", ".join(tag_cols)}), t.tags, t.owner, t.job_id{"".join(f", t.{n}" for n in k8s_names)}
        FROM ({lines}) AS l LEFT JOIN ({derived}) AS t ON {same}
    """


def _tags_map(tag_keys: Sequence[str], used: Sequence[int]) -> str:
    """The ``tags`` MAP of one row from its ``tag_<i>`` columns (NULL when none has a value)."""
    tag_cols = [f"tag_{i}" for i in used]
    if len(tag_cols) == 1:
        only, key = tag_cols[0], literal(tag_keys[used[0]])
        return f"(CASE WHEN {only} IS NULL THEN NULL ELSE map([{key}], [{only}]) END)"
    entries = ", ".join(f"{{'k': {literal(tag_keys[i])}, 'v': tag_{i}}}" for i in used)
    return (
        f"(CASE WHEN coalesce({', '.join(tag_cols)}) IS NULL THEN NULL "
        f"ELSE map_from_entries(list_filter([{entries}], lambda e: e.v IS NOT NULL)) END)"
    )


def _first_of(keys: Sequence[str], index: dict[str, int], *, principal: bool) -> str:
    options = []
    for key in keys:
        if key not in index:
            continue
        column = f"tag_{index[key]}"
        # aws:createdBy is "IAMUser:AIDA…:alice" / "AssumedRole:AROA…:alice@example.com": keep the name.
        if principal and squash(key) == "awscreatedby":
            column = f"NULLIF(regexp_extract({column}, '[^:]+$'), '')"
        options.append(column)
    if not options:
        return "CAST(NULL AS VARCHAR)"
    return options[0] if len(options) == 1 else f"coalesce({', '.join(options)})"
