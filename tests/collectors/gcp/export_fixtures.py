"""Billing-export-shaped schemas and rows shared by the GCP export tests (API schema representation)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from spendwatch.collectors.gcp.export import GcpBillingExportConfig
from spendwatch.connections import GcpConnection
from tests.doubles.google_bigquery import field_schema as f

TABLE = "billing-proj.billing_export.gcp_billing_export_v1_0A1B2C_3D4E5F_6A7B8C"
DETAILED_TABLE = "billing-proj.billing_export.gcp_billing_export_resource_v1_0A1B2C_3D4E5F_6A7B8C"
FOCUS_TABLE = "billing-proj.gcp_billing_immutable_0A1B2C_us.gcp_billing_export_focus_0A1B2C_3D4E5F_6A7B8C"

_KV = [f("key", "STRING"), f("value", "STRING")]

STANDARD_SCHEMA: list[dict[str, Any]] = [
    f("billing_account_id", "STRING"),
    f("service", "RECORD", fields=[f("id", "STRING"), f("description", "STRING")]),
    f("sku", "RECORD", fields=[f("id", "STRING"), f("description", "STRING")]),
    f("usage_start_time", "TIMESTAMP"),
    f("usage_end_time", "TIMESTAMP"),
    f(
        "project",
        "RECORD",
        fields=[
            f("id", "STRING"),
            f("number", "STRING"),
            f("name", "STRING"),
            f("labels", "RECORD", "REPEATED", _KV),
            f("ancestry_numbers", "STRING"),
        ],
    ),
    f("labels", "RECORD", "REPEATED", _KV),
    f("system_labels", "RECORD", "REPEATED", _KV),
    f(
        "location",
        "RECORD",
        fields=[f("location", "STRING"), f("country", "STRING"), f("region", "STRING"), f("zone", "STRING")],
    ),
    f("export_time", "TIMESTAMP"),
    f("cost", "FLOAT"),
    f("currency", "STRING"),
    f("currency_conversion_rate", "FLOAT"),
    f(
        "usage",
        "RECORD",
        fields=[
            f("amount", "FLOAT"),
            f("unit", "STRING"),
            f("amount_in_pricing_units", "FLOAT"),
            f("pricing_unit", "STRING"),
        ],
    ),
    f(
        "credits",
        "RECORD",
        "REPEATED",
        [f("name", "STRING"), f("amount", "FLOAT"), f("full_name", "STRING"), f("id", "STRING"), f("type", "STRING")],
    ),
    f("invoice", "RECORD", fields=[f("month", "STRING")]),
    f("cost_type", "STRING"),
    f(
        "adjustment_info",
        "RECORD",
        fields=[f("id", "STRING"), f("description", "STRING"), f("mode", "STRING"), f("type", "STRING")],
    ),
    f("cost_at_list", "FLOAT"),
]

DETAILED_SCHEMA = [*STANDARD_SCHEMA, f("resource", "RECORD", fields=[f("name", "STRING"), f("global_name", "STRING")])]

FOCUS_SCHEMA: list[dict[str, Any]] = [
    f("BilledCost", "NUMERIC"),
    f("BillingAccountId", "STRING"),
    f("BillingCurrency", "STRING"),
    f("ChargeCategory", "STRING"),
    f("ChargeDescription", "STRING"),
    f("ChargeFrequency", "STRING"),
    f("ChargePeriodStart", "TIMESTAMP"),
    f("ChargePeriodEnd", "TIMESTAMP"),
    f("EffectiveCost", "NUMERIC"),
    f("ListCost", "NUMERIC"),
    f("ProviderName", "STRING"),
    f("RegionId", "STRING"),
    f("ResourceId", "STRING"),
    f("ResourceName", "STRING"),
    f("ServiceCategory", "STRING"),
    f("ServiceName", "STRING"),
    f("SkuId", "STRING"),
    f("SubAccountId", "STRING"),
    f("SubAccountName", "STRING"),
    f("Tags", "RECORD", "REPEATED", [f("key", "STRING"), f("value", "STRING"), f("inherited", "BOOLEAN")]),
]

# The schema of what our aggregation query returns (as BigQuery would type it).
AGGREGATE_SCHEMA: list[dict[str, Any]] = [
    f("period_start", "TIMESTAMP"),
    f("billing_account_id", "STRING"),
    f("project_id", "STRING"),
    f("project_name", "STRING"),
    f("service_id", "STRING"),
    f("service_name", "STRING"),
    f("sku_id", "STRING"),
    f("sku_description", "STRING"),
    f("region_id", "STRING"),
    f("cost_type", "STRING"),
    f("currency", "STRING"),
    f("label_0", "STRING"),
    f("label_1", "STRING"),
    f("label_2", "STRING"),
    f("cost", "FLOAT"),
    f("credits", "FLOAT"),
    f("list_cost", "FLOAT"),
    f("source_rows", "INTEGER"),
]


def export_config(endpoint: str, **overrides: Any) -> GcpBillingExportConfig:
    values: dict[str, Any] = {
        "name": "gcp-billing",
        "table": TABLE,
        "gcp": GcpConnection(project="billing-proj", anonymous=True, endpoints={"bigquery": endpoint}),
        "label_keys": ["owner", "team", "job"],
        "backfill": timedelta(days=40),
        "retry": {"initial": "0.01s", "maximum": "0.05s", "deadline": "60s"},
    }
    values.update(overrides)
    return GcpBillingExportConfig.model_validate(values)
