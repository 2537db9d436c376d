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
    lines = f"""
        SELECT {", ".join([*KEY_COLUMNS, *_row_values(unit, merge)])} {"".join(f", {c}" for c in tag_cols)}
        FROM (SELECT *, {_clamped(unit)} AS ps FROM {partials}) AS p
        {f"GROUP BY ps, {', '.join(group)}" if merge else ""}
    """
    k8s_names = K8S_COLUMNS if k8s else ()
    if not tag_cols:
        return f"SELECT *, {_no_tags(k8s_names)} FROM ({lines}) AS l"
    derived = _derived_sql(tag_values or partials, tag_keys, used, owner_tags, job_tags, k8s)
    same = " AND ".join(f"l.{c} IS NOT DISTINCT FROM t.{c}" for c in tag_cols)
    return f"""
        SELECT l.* EXCLUDE ({", ".join(tag_cols)}), t.tags, t.owner, t.job_id{"".join(f", t.{n}" for n in k8s_names)}
        FROM ({lines}) AS l LEFT JOIN ({derived}) AS t ON {same}
    """


KEY_COLUMNS = (
    "'aws' AS provider",
    *(key for key in GROUP_KEYS if key not in ("period_start", "product_code", "resource_id")),
)
"""The lines' columns that are grouping keys, as the finished lines name them (the hour and the resource
are the rows' own; the product code only names the service category)."""


K8S_COLUMNS = ("k8s_cluster", "k8s_namespace", "k8s_workload")
"""Made only when asked for (else conform() fills them in as NULL, as for every source)."""


def _clamped(unit: str) -> str:
    return f"least(greatest(period_start, CAST($start AS TIMESTAMP)), CAST($end AS TIMESTAMP) - INTERVAL 1 {unit})"


def _row_values(unit: str, merge: bool) -> list[str]:
    """The lines' other columns, over grouped rows with their clamped hour ``ps`` (merged when ``merge``)."""

    def agg(function: str, column: str) -> str:
        return f"{function}({column})" if merge else column

    return [
        f"{agg('arbitrary', 'sub_account_name')} AS sub_account_name",
        f"coalesce({agg('arbitrary', 'service_category')}, {service_category_sql('product_code')}) AS service_category",
        "resource_id",
        "CAST(NULL AS VARCHAR) AS resource_name",
        f"{agg('arbitrary', 'charge_description')} AS charge_description",
        "CAST(ps AS TIMESTAMPTZ) AS charge_period_start",
        f"CAST(greatest({agg('max', 'period_end')}, ps + INTERVAL 1 {unit}) AS TIMESTAMPTZ) AS charge_period_end",
        f"{agg('sum', 'billed_cost')} AS billed_cost",
        f"{agg('sum', 'effective_cost')} AS effective_cost",
        f"{agg('sum', 'list_cost')} AS list_cost",
        f"{agg('bool_or', 'is_estimated')} AS is_estimated",
    ]


def _no_tags(k8s_names: Sequence[str]) -> str:
    """The derived columns when no tag has a value: all NULL."""
    nulls = ["CAST(NULL AS MAP(VARCHAR, VARCHAR)) AS tags", "CAST(NULL AS VARCHAR) AS owner"]
    nulls += ["CAST(NULL AS VARCHAR) AS job_id", *(f"CAST(NULL AS VARCHAR) AS {name}" for name in k8s_names)]
    return ", ".join(nulls)


def _derived_sql(
    tag_values: str,
    tag_keys: Sequence[str],
    used: Sequence[int],
    owner_tags: Sequence[str],
    job_tags: Sequence[str],
    k8s: Mapping[str, Sequence[str]] | None,
) -> str:
    """Tags map, owner, job (and k8s columns) per distinct combination of the ``used`` tag values."""
    k8s_names = K8S_COLUMNS if k8s else ()
    tag_cols = [f"tag_{i}" for i in used]
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
    return f"""
        SELECT {", ".join(tag_cols)}, {_tags_map(tag_keys, used)} AS tags, {owner} AS owner, {job} AS job_id
               {"".join(f", {expr} AS {name}" for name, expr in columns.items())}
        FROM (SELECT DISTINCT {", ".join(tag_cols)} FROM {tag_values}) AS d
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


def finish_narrow_sql(
    tag_keys: Sequence[str],
    owner_tags: Sequence[str],
    job_tags: Sequence[str],
    unit: str,
    present: set[int],
    *,
    merge: bool,
    k8s: Mapping[str, Sequence[str]] | None = None,
    narrow: str = "narrow",
) -> tuple[str, str]:
    """``finish_sql`` for ``narrow`` rows keyed by ``dims`` (``cur_dims``): the lines as two relations.

    The first is one row per line, its own columns and its ``dim_id``; the second one row per
    ``dim_id``: the keys, tags map, owner and job. Their join on ``dim_id`` is the lines
    ``finish_sql`` makes of the wide rows, and each key combination's columns are written once.
    ``narrow`` is the relation of the grouped rows (the ``narrow`` table, or the grouping itself).
    """
    group = "GROUP BY ps, resource_id, dim_id, product_code" if merge else ""
    rows = f"""
        SELECT dim_id, {", ".join(_row_values(unit, merge))}
        FROM (SELECT n.*, d.product_code, {_clamped(unit)} AS ps FROM {narrow} AS n JOIN dims AS d USING (dim_id)) AS p
        {group}
    """
    used = sorted(present)
    k8s_names = K8S_COLUMNS if k8s else ()
    if not used:
        return rows, f"SELECT dim_id, {', '.join(KEY_COLUMNS)}, {_no_tags(k8s_names)} FROM dims"
    derived = _derived_sql("dims", tag_keys, used, owner_tags, job_tags, k8s)
    same = " AND ".join(f"d.tag_{i} IS NOT DISTINCT FROM t.tag_{i}" for i in used)
    keys = ", ".join(KEY_COLUMNS)
    extra = "".join(f", t.{name}" for name in k8s_names)
    per_dim = f"SELECT d.dim_id, {keys}, t.tags, t.owner, t.job_id{extra} FROM dims AS d"
    return rows, f"{per_dim} LEFT JOIN ({derived}) AS t ON {same}"
