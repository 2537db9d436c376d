"""``resources: all`` grouped on a dimension id: the wide keys are grouped once per distinct value, not per line.

With every resource kept, nearly every line is its own group (20M lines, 20M groups), and most of
the grouping's cost was carrying its dozen text keys — account, service, usage type, region, charge
category and frequency, currency, tag values — through a 20M-entry hash table and into a 20M-row
table. Those keys take few distinct values together (a few hundred combinations in a month of a
real estate, against tens of thousands of resources), so:

1. the scan's distinct key combinations not seen yet are added to ``dims``, each with a ``dim_id``
   (a small, low-cardinality grouping);
2. the lines are grouped on (hour, resource, ``dim_id``) — the line's keys are matched to their
   ``dim_id`` through a hash join against the small ``dims`` — in the finish, straight into the lines
   file when the period is one scan with no line to clamp, else into the ``narrow`` table first (rows
   of several scans, or clamped into the period, can share a key and are merged there);
3. the finish writes the lines as ``narrow``'s rows and ``dims``' keys, tags, owner and job in two
   files the store joins back as it inserts (``cur_finish.finish_narrow_sql``, ``CostLinesFile.dims``):
   the same lines as the wide grouping's, each key combination written once.

``dim_id`` stands for exactly one combination of key values (NULL included: the set difference and
the join compare NULL as a value), so grouping on it is grouping on the keys. Measured on 6M lines
of the benchmark month (benchmarks/README.md): the grouping 12.2 s -> 3.2 s, 12.4 -> 6.2 CPU-s.
"""

from __future__ import annotations

from collections.abc import Collection

from spendwatch.collectors.aws.cur_sql import GROUP_KEYS, GROUP_VALUES, GROUPED_TYPES, CurSql, Grain, group_values
from spendwatch.store.lines_file import new_combinations_sql

DIM_KEYS = tuple(key for key in GROUP_KEYS if key not in ("period_start", "resource_id"))
"""The grain's keys that go to ``dims``; the hour and the resource stay on each grouped row."""

NARROW_COLUMNS = {
    name: GROUPED_TYPES.get(name, "VARCHAR")
    for name in ("period_start", "resource_id", "dim_id", *GROUP_VALUES, "line_items")
}


def dim_columns(tag_count: int) -> list[str]:
    """The ``dims`` columns after ``dim_id``: the grain's text keys, then every ``tag_<i>``."""
    return [*DIM_KEYS, *(f"tag_{i}" for i in range(tag_count))]


def create_tables_sql(tag_count: int) -> list[str]:
    dims = ", ".join(f"{name} VARCHAR" for name in dim_columns(tag_count))
    narrow = ", ".join(f"{name} {kind}" for name, kind in NARROW_COLUMNS.items())
    return [f"CREATE TABLE dims (dim_id BIGINT, {dims})", f"CREATE TABLE narrow ({narrow})"]


def _keys_of(present_tags: Collection[int], tag_count: int) -> list[str]:
    """Each dims column as an expression over a relation that has only ``present_tags`` of the tags."""
    tags = [f"tag_{i}" if i in present_tags else f"CAST(NULL AS VARCHAR) AS tag_{i}" for i in range(tag_count)]
    return [*DIM_KEYS, *tags]


def new_dims_sql(source: str, present_tags: Collection[int], tag_count: int) -> str:
    """Rows for ``INSERT INTO dims BY NAME``: the key combinations of ``source`` not in ``dims`` yet.

    ``source`` is a relation with the ``DIM_KEYS`` columns and the ``present_tags`` tag columns (the
    normalised lines of a scan, or wide grouped rows). ``EXCEPT`` compares NULL as a value.
    """
    incoming = f"SELECT DISTINCT {', '.join(_keys_of(present_tags, tag_count))} FROM ({source}) AS s"
    return new_combinations_sql("dims", incoming, ", ".join(dim_columns(tag_count)))


def _matching_dim(alias: str, present_tags: Collection[int], tag_count: int) -> str:
    """The join of ``alias``'s rows to their ``dims`` row: every key equal, NULL matching NULL."""
    tests = [f"{alias}.{key} IS NOT DISTINCT FROM d.{key}" for key in DIM_KEYS]
    for i in range(tag_count):
        tests.append(f"{alias}.tag_{i} IS NOT DISTINCT FROM d.tag_{i}" if i in present_tags else f"d.tag_{i} IS NULL")
    return " AND ".join(tests)


def narrow_sql(cur: CurSql, source: str, grain: Grain, *, absent: Collection[str]) -> str:
    """Rows for ``INSERT INTO narrow BY NAME``: the lines of ``source`` grouped on (hour, resource, dim_id).

    Run after ``new_dims_sql`` of the same source, so every line finds its ``dims`` row.
    """
    unit = "hour" if grain.period == "hourly" else "day"
    present = set(cur.tag_indices())
    on = _matching_dim("n", present, len(cur.tag_keys))
    return (
        f"SELECT date_trunc('{unit}', n.usage_start) AS period_start, n.resource_id, d.dim_id, "
        f"{', '.join(group_values(absent, count=True))} "
        f"FROM ({cur.normalised(source)}) AS n JOIN dims AS d ON {on} GROUP BY ALL"
    )


def narrow_from_wide_sql(wide: str, tag_count: int) -> str:
    """Rows for ``INSERT INTO narrow BY NAME`` from grouped rows with every key (the Athena pushdown's)."""
    on = _matching_dim("w", range(tag_count), tag_count)
    values = [name for name in NARROW_COLUMNS if name not in ("resource_id", "dim_id", "period_start")]
    return (
        f"SELECT w.period_start, w.resource_id, d.dim_id, {', '.join(f'w.{v}' for v in values)} "
        f"FROM {wide} AS w JOIN dims AS d ON {on}"
    )
