"""What an AWS billing export's columns are: CUR 2.0, legacy CUR (Parquet or CSV) or FOCUS.

``detect_columns`` works out the layout from the column names alone (of a file, or of the Athena
table's Glue definition) and maps the columns spendwatch reads to canonical names; the SQL that reads
them is in ``aws_cur_sql``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from spendwatch.collectors.aws.charges import squash

Layout = Literal["cur", "cur1-csv", "focus"]

# snake_case CUR column → kind. "ts" and "num" are cast when read from CSV.
CUR_COLUMNS: dict[str, str] = {
    "line_item_usage_start_date": "ts",
    "line_item_usage_end_date": "ts",
    "line_item_line_item_type": "text",
    "line_item_unblended_cost": "num",
    "line_item_currency_code": "text",
    "bill_payer_account_id": "text",
    "bill_invoice_id": "text",
    "line_item_usage_account_id": "text",
    "line_item_usage_account_name": "text",
    "line_item_product_code": "text",
    "product_product_name": "text",
    "product_servicecode": "text",
    "line_item_usage_type": "text",
    "product_region_code": "text",
    "product_region": "text",
    "line_item_resource_id": "text",
    "line_item_line_item_description": "text",
    "pricing_public_on_demand_cost": "num",
    "savings_plan_savings_plan_effective_cost": "num",
    "savings_plan_total_commitment_to_date": "num",
    "savings_plan_used_commitment": "num",
    "reservation_effective_cost": "num",
    "reservation_unused_amortized_upfront_fee_for_billing_period": "num",
    "reservation_unused_recurring_fee": "num",
    "reservation_reservation_a_r_n": "text",
    # EKS split cost allocation data (CUR 2.0 "INCLUDE_SPLIT_COST_ALLOCATION_DATA"): one line per pod,
    # CPU/memory/GPU, whose cost is in these columns (its line_item_unblended_cost is 0).
    "split_line_item_parent_resource_id": "text",
    "split_line_item_split_cost": "num",
    "split_line_item_unused_cost": "num",
    "split_line_item_net_split_cost": "num",
    "split_line_item_net_unused_cost": "num",
}
CUR_REQUIRED = (
    "line_item_usage_start_date",
    "line_item_usage_end_date",
    "line_item_line_item_type",
    "line_item_unblended_cost",
    "line_item_currency_code",
)
# squashed FOCUS column name → canonical role.
FOCUS_COLUMNS: dict[str, str] = {
    "chargeperiodstart": "ts",
    "chargeperiodend": "ts",
    "billedcost": "num",
    "effectivecost": "num",
    "listcost": "num",
    "billingcurrency": "text",
    "chargecategory": "text",
    "chargefrequency": "text",
    "billingaccountid": "text",
    "subaccountid": "text",
    "subaccountname": "text",
    "servicename": "text",
    "servicecategory": "text",
    "skuid": "text",
    "xusagetype": "text",
    "regionid": "text",
    "resourceid": "text",
    "chargedescription": "text",
    "invoiceid": "text",
}
FOCUS_REQUIRED = ("chargeperiodstart", "chargeperiodend", "billedcost", "billingcurrency", "chargecategory")

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def snake(name: str) -> str:
    """``lineItem/UsageStartDate`` → ``line_item_usage_start_date`` (how CUR 2.0 names CUR 1 columns)."""
    parts = [_CAMEL.sub("_", part) for part in re.split(r"[/:\-\s]+", name.strip())]
    return "_".join(p for p in parts if p).lower()


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def tag_candidates(key: str) -> list[str]:
    """Spellings of a tag key across exports: ``owner`` → ``owner``, ``user:owner``, ``user_owner``.

    ``k8s-label/<label>`` is a Kubernetes workload label, which EKS imports as the user tag ``<label>``
    (``app.kubernetes.io/name`` → CUR 2.0's ``user_app_kubernetes_io_name``).
    """
    if key.startswith("k8s-label/"):
        key = key[len("k8s-label/") :]
    bases = [key] if ":" in key else [key, f"user:{key}"]
    out: list[str] = []
    for base in bases:
        flat = re.sub(r"[^A-Za-z0-9]+", "_", base).lower()
        for spelling in (base, base.replace(":", "_"), snake(base.replace(":", "/")), flat):
            if spelling not in out:
                out.append(spelling)
    return out


@dataclass(frozen=True)
class Columns:
    """The columns one export file (or Athena table) has, and how to read them."""

    layout: Layout
    names: dict[str, str]  # canonical (snake or squashed FOCUS) name → column as named in the source
    tag_map: str | None  # a MAP(VARCHAR,VARCHAR) (or JSON text) column holding every tag
    tag_map_is_json: bool
    tag_columns: dict[str, str]  # tag key → column holding it (legacy CUR: one column per tag)
    product_map: str | None  # CUR 2.0's ``product`` column (a MAP, or JSON text in CSV exports)
    product_map_is_json: bool = False

    @property
    def missing(self) -> list[str]:
        required = FOCUS_REQUIRED if self.layout == "focus" else CUR_REQUIRED
        return [name for name in required if name not in self.names]


def detect_columns(names: Sequence[str], *, map_columns: Iterable[str] = ()) -> Columns:
    """Work out the layout of a file from its column names (``map_columns``: those of MAP type)."""
    maps = set(map_columns)
    squashed = {squash(n): n for n in names}
    if "billedcost" in squashed and "chargeperiodstart" in squashed:
        known = {key: squashed[key] for key in FOCUS_COLUMNS if key in squashed}
        tags = squashed.get("tags")
        return Columns("focus", known, tags, tags is not None and tags not in maps, {}, None)
    if any("/" in n for n in names):
        renamed = {snake(n): n for n in names if not n.lower().startswith("resourcetags/")}
        tag_columns = {n.split("/", 1)[1]: n for n in names if n.lower().startswith("resourcetags/")}
        known = {key: renamed[key] for key in CUR_COLUMNS if key in renamed}
        return Columns("cur1-csv", known, None, False, tag_columns, None)
    lowered = {n.lower(): n for n in names}
    known = {key: lowered[key] for key in CUR_COLUMNS if key in lowered}
    tag_map = lowered.get("resource_tags")
    tag_columns = {
        n[len("resource_tags_") :]: n for n in names if n.lower().startswith("resource_tags_") and n != tag_map
    }
    product = lowered.get("product")
    return Columns(
        "cur",
        known,
        tag_map,
        tag_map is not None and tag_map not in maps,
        tag_columns,
        product,
        product is not None and product not in maps,
    )
