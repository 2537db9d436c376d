"""The FOCUS-shaped columns of cost lines and job records, as Arrow schemas.

Names follow the FinOps FOCUS specification in snake_case. Sources hand the store Arrow tables in
exactly these schemas (``conform`` fills and checks them), so a collector never writes SQL.
"""

from __future__ import annotations

from typing import Final

import pyarrow as pa

CHARGE_CATEGORIES: Final = ("Usage", "Purchase", "Tax", "Credit", "Adjustment")
CHARGE_FREQUENCIES: Final = ("One-Time", "Recurring", "Usage-Based")
SCORED_CHARGE_CATEGORY: Final = "Usage"

# No bill line is a quadrillion in any currency; bigger finite values (1e300) still sum to infinity.
MAX_AMOUNT: Final = 1e15

TAGS_TYPE: Final = pa.map_(pa.string(), pa.string())
TIMESTAMP: Final = pa.timestamp("us", tz="UTC")

COST_LINE_SCHEMA: Final = pa.schema(
    [
        pa.field("provider", pa.string(), nullable=False),
        pa.field("billing_account_id", pa.string()),
        pa.field("sub_account_id", pa.string()),
        pa.field("sub_account_name", pa.string()),
        pa.field("service_name", pa.string()),
        pa.field("service_category", pa.string()),
        pa.field("sku_id", pa.string()),
        pa.field("region_id", pa.string()),
        pa.field("resource_id", pa.string()),
        pa.field("resource_name", pa.string()),
        pa.field("charge_category", pa.string(), nullable=False),
        pa.field("charge_frequency", pa.string()),
        pa.field("charge_description", pa.string()),
        pa.field("charge_period_start", TIMESTAMP, nullable=False),
        pa.field("charge_period_end", TIMESTAMP, nullable=False),
        pa.field("billed_cost", pa.float64(), nullable=False),
        pa.field("effective_cost", pa.float64(), nullable=False),
        pa.field("list_cost", pa.float64()),
        pa.field("billing_currency", pa.string(), nullable=False),
        pa.field("tags", TAGS_TYPE),
        pa.field("owner", pa.string()),
        pa.field("job_id", pa.string()),
        pa.field("is_estimated", pa.bool_()),
        # Kubernetes: where a line's cost ran (EKS split cost allocation, GKE cost allocation, OpenCost).
        pa.field("k8s_cluster", pa.string()),
        pa.field("k8s_namespace", pa.string()),
        pa.field("k8s_workload", pa.string()),
        # The rest of FOCUS 1.0 (migration 0006): kept where the source has them, for ``costs export``.
        pa.field("billing_account_name", pa.string()),
        pa.field("billing_period_start", TIMESTAMP),
        pa.field("billing_period_end", TIMESTAMP),
        pa.field("charge_class", pa.string()),
        pa.field("availability_zone", pa.string()),
        pa.field("region_name", pa.string()),
        pa.field("resource_type", pa.string()),
        pa.field("sku_price_id", pa.string()),
        pa.field("pricing_category", pa.string()),
        pa.field("pricing_quantity", pa.float64()),
        pa.field("pricing_unit", pa.string()),
        pa.field("consumed_quantity", pa.float64()),
        pa.field("consumed_unit", pa.string()),
        pa.field("list_unit_price", pa.float64()),
        pa.field("contracted_unit_price", pa.float64()),
        pa.field("contracted_cost", pa.float64()),
        pa.field("commitment_discount_id", pa.string()),
        pa.field("commitment_discount_name", pa.string()),
        pa.field("commitment_discount_category", pa.string()),
        pa.field("commitment_discount_status", pa.string()),
        pa.field("commitment_discount_type", pa.string()),
        pa.field("invoice_issuer_name", pa.string()),
        pa.field("publisher_name", pa.string()),
    ]
)

# ``cost_lines`` is a view over two tables (migration 0007): the columns lines share — keys, tags,
# owner, job, the FOCUS descriptors — once per distinct combination in ``cost_line_dims`` under a
# ``dim_id``, and each line's own columns (resource, periods, money, quantities) with its ``dim_id``
# in ``cost_line_rows``. Every ``COST_LINE_SCHEMA`` column is in exactly one of the two.
LINE_ROW_COLUMNS: Final = (
    "resource_id",
    "resource_name",
    "sub_account_name",
    "service_category",
    "charge_description",
    "charge_period_start",
    "charge_period_end",
    "billed_cost",
    "effective_cost",
    "list_cost",
    "is_estimated",
    "pricing_quantity",
    "consumed_quantity",
    "list_unit_price",
    "contracted_unit_price",
    "contracted_cost",
)
LINE_DIM_COLUMNS: Final = tuple(field.name for field in COST_LINE_SCHEMA if field.name not in LINE_ROW_COLUMNS)

JOB_SCHEMA: Final = pa.schema(
    [
        pa.field("platform", pa.string(), nullable=False),
        pa.field("job_id", pa.string(), nullable=False),
        pa.field("provider", pa.string(), nullable=False),
        pa.field("sub_account_id", pa.string()),
        pa.field("region_id", pa.string()),
        pa.field("name", pa.string()),
        pa.field("user", pa.string()),
        pa.field("owner", pa.string()),
        pa.field("owner_source", pa.string()),
        pa.field("state", pa.string(), nullable=False),
        pa.field("start_time", TIMESTAMP),
        pa.field("end_time", TIMESTAMP),
        pa.field("query_text", pa.string()),
        pa.field("query_hash", pa.string()),
        pa.field("bytes_processed", pa.int64()),
        pa.field("bytes_billed", pa.int64()),
        pa.field("slot_ms", pa.int64()),
        pa.field("instance_type", pa.string()),
        pa.field("instance_count", pa.int64()),
        pa.field("max_runtime_seconds", pa.int64()),
        pa.field("estimated_cost", pa.float64()),
        pa.field("projected_cost", pa.float64()),
        pa.field("cost_method", pa.string()),
        pa.field("billing_currency", pa.string(), nullable=False),
        pa.field("resource_id", pa.string()),
        pa.field("labels", TAGS_TYPE),
    ]
)

JOB_STATES_RUNNING: Final = frozenset({"PENDING", "QUEUED", "RUNNING", "STARTING", "IN_PROGRESS"})

# Dimensions a monitor may group or filter by; ``tag:<key>`` and ``label:<key>`` (a Kubernetes workload
# label, stored as the tag ``k8s-label/<key>``) are allowed in addition.
DIMENSIONS: Final = (
    "provider",
    "billing_account_id",
    "sub_account_id",
    "sub_account_name",
    "service_name",
    "service_category",
    "sku_id",
    "region_id",
    "resource_id",
    "charge_category",
    "owner",
    "job_id",
    "billing_currency",
    "cluster",
    "namespace",
    "workload",
)
# Monitor dimensions whose column in ``cost_lines`` has another name.
DIMENSION_COLUMNS: Final = {"cluster": "k8s_cluster", "namespace": "k8s_namespace", "workload": "k8s_workload"}
K8S_LABEL_PREFIX: Final = "k8s-label/"


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Reorder, add missing nullable columns as nulls, and cast ``table`` to ``schema``.

    Raises ``ValueError`` naming the column when a required column is missing or holds nulls;
    callers turn it into an error naming their file or API.
    """
    columns = []
    for field in schema:
        if field.name in table.column_names:
            column = table.column(field.name)
            if column.type != field.type:
                column = column.cast(field.type)
            if not field.nullable and column.null_count:
                raise ValueError(f"column {field.name!r} has {column.null_count} empty value(s)")
        elif field.nullable:
            column = pa.nulls(table.num_rows, field.type)
        else:
            raise ValueError(f"required column {field.name!r} is missing")
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema)
