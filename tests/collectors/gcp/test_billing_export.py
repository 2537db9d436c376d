"""gcp-billing-export through the real google-cloud-bigquery client against the fake BigQuery API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from spendwatch.collect import collect_source
from spendwatch.collectors.gcp.export import GcpBillingExportConfig, month_chunks
from spendwatch.store import Store
from tests.collectors.gcp.export_fixtures import (
    AGGREGATE_SCHEMA,
    DETAILED_SCHEMA,
    DETAILED_TABLE,
    FOCUS_SCHEMA,
    FOCUS_TABLE,
    STANDARD_SCHEMA,
    TABLE,
    export_config,
)
from tests.doubles.clock import FixedClock
from tests.doubles.google import ApiError, GoogleApiServer, permission_denied
from tests.doubles.google_bigquery import FakeBigQuery, QueryAnswer, QueryCall
from tests.doubles.google_bigquery import field_schema as f

NOW = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)


def _row(start: datetime, cost: float, credits: float = 0.0, **extra: Any) -> dict[str, Any]:
    row = {
        "period_start": start,
        "billing_account_id": "0A1B2C-3D4E5F-6A7B8C",
        "project_id": "analytics-warehouse",
        "project_name": "Analytics Warehouse",
        "service_id": "24E6-581D-38E5",
        "service_name": "BigQuery",
        "sku_id": "3362-E469-6BEF",
        "sku_description": "Analysis",
        "region_id": "us",
        "cost_type": "regular",
        "currency": "USD",
        "label_0": "dana",
        "label_1": "data",
        "label_2": None,
        "cost": cost,
        "credits": credits,
        "list_cost": cost * 1.1,
        "source_rows": 3,
    }
    row.update(extra)
    return row


@pytest.fixture
def bq(google_api: GoogleApiServer) -> FakeBigQuery:
    fake = FakeBigQuery(google_api)
    fake.add_table(TABLE, STANDARD_SCHEMA)
    return fake


@pytest.fixture
def store(tmp_path: Path, clock: FixedClock) -> Store:
    return Store(tmp_path / "store.duckdb", clock=clock)


def _one_row_per_chunk(call: QueryCall) -> QueryAnswer:
    start = call.parameters["start"]
    return QueryAnswer(
        AGGREGATE_SCHEMA, [_row(start, 10.0, -2.5)], total_bytes_billed=20 << 20, total_bytes_processed=19 << 20
    )


def test_first_run_backfills_by_month_with_pruned_capped_parameterised_queries(
    google_api: GoogleApiServer, bq: FakeBigQuery, store: Store, clock: FixedClock
) -> None:
    bq.on_query(_one_row_per_chunk)
    run = collect_source(export_config(google_api.endpoint), store, clock)
    assert run.error is None, run.error
    assert [(q.parameters["start"], q.parameters["end"]) for q in bq.queries] == [
        (datetime(2026, 10, 11, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)),
        (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 20, 10, tzinfo=UTC)),
    ]
    call = bq.queries[0]
    assert call.maximum_bytes_billed == 50 << 30
    assert call.configuration["query"]["useLegacySql"] is False
    assert call.configuration["labels"] == {"spendwatch": "billing-export", "spendwatch-source": "gcp-billing"}
    assert f"FROM `{TABLE}`" in call.sql
    assert "_PARTITIONTIME >= @partition_start AND _PARTITIONTIME < @partition_end" in call.sql
    assert "usage_start_time >= @start" in call.sql and "usage_start_time < @end" in call.sql
    assert "TIMESTAMP_TRUNC(usage_start_time, HOUR)" in call.sql
    assert call.parameters["partition_start"] == datetime(2026, 10, 10, tzinfo=UTC)
    assert call.parameters["partition_end"] == datetime(2026, 11, 11, tzinfo=UTC)
    assert call.parameter_types["start"] == "TIMESTAMP"
    assert [call.parameters[f"label_{i}"] for i in range(3)] == ["owner", "team", "job"]
    # No config value is pasted into the SQL: the label keys only travel as parameters.
    assert "'owner'" not in call.sql and "owner" not in call.sql.replace("@label_0", "")
    assert run.counters["gcp_bigquery_bytes_billed"] == 2 * (20 << 20)
    assert run.counters["gcp_bigquery_queries"] == 2
    assert store.get_state("gcp-billing", "loaded_until") == "2026-11-20T10:00:00+00:00"


def test_credits_are_their_own_lines_and_net_cost_adds_them(
    google_api: GoogleApiServer, bq: FakeBigQuery, store: Store, clock: FixedClock
) -> None:
    hour = datetime(2026, 11, 19, 14, tzinfo=UTC)

    def answer(call: QueryCall) -> QueryAnswer:
        if call.parameters["start"] > hour:
            return QueryAnswer(AGGREGATE_SCHEMA, [])
        return QueryAnswer(
            AGGREGATE_SCHEMA,
            [
                _row(hour, 100.0, -30.0),
                _row(hour, 8.0, 0.0, cost_type="tax", sku_description="Tax", label_0=None),
                _row(hour, -0.01, 0.0, cost_type="rounding_error", label_0=None),
                _row(hour, -5.0, 0.0, cost_type="adjustment", label_0=None),
            ],
        )

    bq.on_query(answer)
    run = collect_source(export_config(google_api.endpoint, backfill="5d"), store, clock)
    assert run.error is None, run.error
    rows = store.query(
        "SELECT charge_category, charge_frequency, billed_cost, effective_cost, owner, charge_period_end, tags "
        "FROM cost_lines ORDER BY charge_category, billed_cost"
    )
    by_category = {(r[0], r[2]) for r in rows}
    assert by_category == {
        ("Adjustment", -5.0),
        ("Adjustment", -0.01),
        ("Credit", -30.0),
        ("Tax", 8.0),
        ("Usage", 100.0),
    }
    usage = next(r for r in rows if r[0] == "Usage")
    assert usage[1] == "Usage-Based" and usage[3] == 100.0 and usage[4] == "dana"
    assert usage[5] == hour + timedelta(hours=1)
    assert usage[6] == {"owner": "dana", "team": "data"}
    credit = next(r for r in rows if r[0] == "Credit")
    assert credit[4] == "dana"  # credits stay attributed to the same owner
    [(net,)] = store.query("SELECT sum(billed_cost) FROM cost_lines")
    assert net == pytest.approx(100.0 - 30.0 + 8.0 - 0.01 - 5.0)


def test_every_run_replaces_the_restatement_window_without_doubling(
    google_api: GoogleApiServer, bq: FakeBigQuery, store: Store, clock: FixedClock
) -> None:
    amounts = {"cost": 10.0}

    def answer(call: QueryCall) -> QueryAnswer:
        start, end = call.parameters["start"], call.parameters["end"]
        rows = []
        day = start.replace(hour=0)
        while day < end:
            if day >= start:
                rows.append(_row(day + timedelta(hours=3), amounts["cost"]))
            day += timedelta(days=1)
        return QueryAnswer(AGGREGATE_SCHEMA, rows)

    bq.on_query(answer)
    config = export_config(google_api.endpoint, backfill="10d")
    assert collect_source(config, store, clock).error is None
    [(before,)] = store.query("SELECT sum(billed_cost) FROM cost_lines")
    assert before == 10 * 11.0  # Nov 10 .. Nov 20

    amounts["cost"] = 12.0  # late rows raise the last days' cost
    clock.advance(hours=1)
    bq.queries.clear()
    assert collect_source(config, store, clock).error is None
    [call] = bq.queries
    assert call.parameters["start"] == datetime(2026, 11, 17, tzinfo=UTC)  # 3 days back, whole days
    daily = dict(
        store.query("SELECT date_trunc('day', charge_period_start), sum(billed_cost) FROM cost_lines GROUP BY 1")
    )
    assert sorted(daily.values()) == [10.0] * 7 + [12.0] * 4
    assert len(daily) == 11


def test_results_are_paged_with_page_tokens(
    google_api: GoogleApiServer, bq: FakeBigQuery, store: Store, clock: FixedClock
) -> None:
    hour = datetime(2026, 11, 19, tzinfo=UTC)
    rows = [_row(hour + timedelta(hours=i), 1.0) for i in range(7)]
    bq.on_query(lambda call: QueryAnswer(AGGREGATE_SCHEMA, rows if call.parameters["start"] <= hour else []))
    bq.max_page_rows = 3
    run = collect_source(export_config(google_api.endpoint, backfill="2d"), store, clock)
    assert run.error is None and run.cost_rows == 7
    tokens = [c.query.get("pageToken") for c in google_api.calls("GET", "/bigquery/v2/projects/{p}/queries/{job}")]
    assert "3" in tokens and "6" in tokens


def test_429_and_500_are_retried(
    google_api: GoogleApiServer, bq: FakeBigQuery, store: Store, clock: FixedClock
) -> None:
    bq.on_query(_one_row_per_chunk)
    google_api.fail("POST", "/bigquery/v2/projects/{p}/jobs", 429, times=1, reason="rateLimitExceeded")
    google_api.fail("POST", "/bigquery/v2/projects/{p}/jobs", 500, times=1, reason="backendError")
    google_api.fail("GET", "/bigquery/v2/projects/{p}/queries/{j}", 503, times=1)
    run = collect_source(export_config(google_api.endpoint, backfill="2d"), store, clock)
    assert run.error is None, run.error
    assert run.cost_rows == 2


def test_403_names_the_permission_and_the_resource(
    google_api: GoogleApiServer, bq: FakeBigQuery, store: Store, clock: FixedClock
) -> None:
    def deny(call: QueryCall) -> QueryAnswer:
        raise ApiError(403, "Access Denied: Project billing-proj: User does not have bigquery.jobs.create permission")

    bq.on_query(deny)
    run = collect_source(export_config(google_api.endpoint), store, clock)
    assert run.error is not None and "\n" not in run.error
    assert "permission denied" in run.error and "bigquery.jobs.create" in run.error and TABLE in run.error
    assert store.query("SELECT count(*) FROM cost_lines") == [(0,)]


def test_403_from_tables_get_uses_the_permission_google_names(
    google_api: GoogleApiServer, bq: FakeBigQuery, store: Store, clock: FixedClock
) -> None:
    def deny(request: Any) -> None:
        raise permission_denied("bigquery.tables.get", "projects/billing-proj/datasets/billing_export/tables/x")

    google_api.add_route("GET", "/bigquery/v2/projects/{p}/datasets/{d}/tables/{t}", deny)
    run = collect_source(export_config(google_api.endpoint), store, clock)
    assert run.error is not None and "the credentials need bigquery.tables.get on table" in run.error


def test_missing_table_and_changed_schema_are_clear_errors(
    google_api: GoogleApiServer, bq: FakeBigQuery, store: Store, clock: FixedClock
) -> None:
    other = TABLE.replace("6A7B8C", "FFFFFF")
    run = collect_source(export_config(google_api.endpoint, table=other), store, clock)
    assert run.error is not None and f"table {other} was not found" in run.error
    assert bq.queries == []

    broken = [field for field in STANDARD_SCHEMA if field["name"] != "credits"]
    bq.add_table(TABLE, broken)
    run = collect_source(export_config(google_api.endpoint), store, clock)
    assert run.error is not None
    assert "does not look like a standard billing export (missing column(s): credits.amount)" in run.error


def test_a_changed_result_shape_loads_nothing(
    google_api: GoogleApiServer, bq: FakeBigQuery, store: Store, clock: FixedClock
) -> None:
    hour = datetime(2026, 11, 19, tzinfo=UTC)
    bq.on_query(lambda call: QueryAnswer(AGGREGATE_SCHEMA, [_row(hour, 1.0), _row(hour, 2.0, currency=None)]))
    run = collect_source(export_config(google_api.endpoint, backfill="2d"), store, clock)
    assert run.error is not None and "no currency" in run.error
    assert store.query("SELECT count(*) FROM cost_lines") == [(0,)]


def test_a_failing_month_keeps_its_old_data_and_the_cursor(
    google_api: GoogleApiServer, bq: FakeBigQuery, store: Store, clock: FixedClock
) -> None:
    bq.on_query(_one_row_per_chunk)
    config = export_config(google_api.endpoint)
    assert collect_source(config, store, clock).error is None
    store.set_state("gcp-billing", "loaded_until", "2026-10-11T00:00:00+00:00")  # pretend a long pause

    def second_month_fails(call: QueryCall) -> QueryAnswer:
        if call.parameters["start"].month == 11:
            return QueryAnswer(
                error=ApiError(400, "Query exceeded limit for bytes billed: 1000.", reason="bytesBilledLimitExceeded")
            )
        return QueryAnswer(AGGREGATE_SCHEMA, [_row(call.parameters["start"], 99.0)])

    bq.on_query(second_month_fails)
    run = collect_source(config, store, clock)
    assert run.error is not None and "maximum_bytes_billed" in run.error and "\n" not in run.error
    months = dict(store.query("SELECT month(charge_period_start), sum(billed_cost) FROM cost_lines GROUP BY 1"))
    assert months == {10: 99.0, 11: 7.5}  # October replaced, November (10 - 2.5 credits) untouched
    assert store.get_state("gcp-billing", "loaded_until") == "2026-11-01T00:00:00+00:00"


def test_detailed_export_groups_by_resource(
    google_api: GoogleApiServer, bq: FakeBigQuery, store: Store, clock: FixedClock
) -> None:
    bq.add_table(DETAILED_TABLE, DETAILED_SCHEMA)
    hour = datetime(2026, 11, 19, tzinfo=UTC)
    schema = [*AGGREGATE_SCHEMA[:11], f("resource_id", "STRING"), f("resource_name", "STRING"), *AGGREGATE_SCHEMA[11:]]
    resource = "//compute.googleapis.com/projects/ml/zones/us-central1-a/instances/trainer-1"
    bq.on_query(lambda c: QueryAnswer(schema, [_row(hour, 3.0, resource_id=resource, resource_name="trainer-1")]))
    run = collect_source(export_config(google_api.endpoint, table=DETAILED_TABLE, backfill="2d"), store, clock)
    assert run.error is None, run.error
    assert "resource.global_name AS resource_id" in bq.queries[0].sql
    assert store.query("SELECT resource_id, resource_name FROM cost_lines") == [(resource, "trainer-1")]


def test_focus_export_goes_through_the_focus_mapping(
    google_api: GoogleApiServer, bq: FakeBigQuery, store: Store, clock: FixedClock
) -> None:
    bq.add_table(FOCUS_TABLE, FOCUS_SCHEMA, partition_field="ChargePeriodStart")
    schema = [
        f("period_start", "TIMESTAMP"),
        f("billing_account_id", "STRING"),
        f("project_id", "STRING"),
        f("project_name", "STRING"),
        f("service_name", "STRING"),
        f("service_category", "STRING"),
        f("sku_id", "STRING"),
        f("sku_description", "STRING"),
        f("region_id", "STRING"),
        f("charge_category", "STRING"),
        f("charge_frequency", "STRING"),
        f("currency", "STRING"),
        f("provider_name", "STRING"),
        f("resource_id", "STRING"),
        f("resource_name", "STRING"),
        f("label_0", "STRING"),
        f("billed_cost", "NUMERIC"),
        f("effective_cost", "NUMERIC"),
        f("list_cost", "NUMERIC"),
        f("source_rows", "INTEGER"),
    ]
    hour = datetime(2026, 11, 19, 5, tzinfo=UTC)
    base = {
        "period_start": hour,
        "billing_account_id": "0A1B2C-3D4E5F-6A7B8C",
        "project_id": "ml-research",
        "project_name": "ML Research",
        "service_name": "Vertex AI",
        "service_category": "AI and Machine Learning",
        "sku_id": "A100",
        "sku_description": "Nvidia A100 GPU",
        "region_id": "us-central1",
        "charge_frequency": "usage-based",
        "currency": "USD",
        "provider_name": "Google Cloud",
        "label_0": "ben",
    }
    rows = [
        {**base, "charge_category": "usage", "billed_cost": "40.5", "effective_cost": "30.25", "list_cost": "45"},
        {**base, "charge_category": "Credit", "billed_cost": "-4.5", "effective_cost": "-4.5", "list_cost": None},
    ]
    bq.on_query(lambda c: QueryAnswer(schema, rows if c.parameters["start"] <= hour else []))
    config = export_config(google_api.endpoint, table=FOCUS_TABLE, backfill="2d", label_keys=["owner"])
    run = collect_source(config, store, clock)
    assert run.error is None, run.error
    sql = bq.queries[0].sql
    assert "`ChargePeriodStart` >= @partition_start" in sql and "ChargePeriodStart >= @start" in sql
    assert "UNNEST(Tags)" in sql
    got = store.query(
        "SELECT provider, charge_category, charge_frequency, billed_cost, effective_cost, list_cost, owner "
        "FROM cost_lines ORDER BY billed_cost"
    )
    assert got == [
        ("gcp", "Credit", "Usage-Based", -4.5, -4.5, None, "ben"),
        ("gcp", "Usage", "Usage-Based", 40.5, 30.25, 45.0, "ben"),
    ]


def test_focus_rows_with_an_unknown_category_are_refused(
    google_api: GoogleApiServer, bq: FakeBigQuery, store: Store, clock: FixedClock
) -> None:
    bq.add_table(FOCUS_TABLE, FOCUS_SCHEMA)
    schema = [
        f("period_start", "TIMESTAMP"),
        f("charge_category", "STRING"),
        f("currency", "STRING"),
        f("billed_cost", "FLOAT"),
    ]
    hour = datetime(2026, 11, 19, tzinfo=UTC)
    bq.on_query(
        lambda c: QueryAnswer(
            schema, [{"period_start": hour, "charge_category": "Refund", "currency": "USD", "billed_cost": 1}]
        )
    )
    run = collect_source(export_config(google_api.endpoint, table=FOCUS_TABLE, backfill="2d"), store, clock)
    assert run.error is not None and "ChargeCategory 'Refund'" in run.error


def test_daily_granularity_and_project_labels(
    google_api: GoogleApiServer, bq: FakeBigQuery, store: Store, clock: FixedClock
) -> None:
    bq.on_query(lambda c: QueryAnswer(AGGREGATE_SCHEMA, []))
    config = export_config(
        google_api.endpoint,
        granularity="day",
        project_label_keys=["cost-center"],
        backfill="2d",
        maximum_bytes_billed=20 << 30,
        location="EU",
    )
    assert collect_source(config, store, clock).error is None
    [call] = bq.queries
    assert call.maximum_bytes_billed == 20 << 30 and call.location == "eu"
    assert "TIMESTAMP_TRUNC(usage_start_time, DAY)" in call.sql
    assert "UNNEST(project.labels)" in call.sql and call.parameters["project_label_0"] == "cost-center"
    assert call.parameters["end"] == datetime(2026, 11, 21, tzinfo=UTC)


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"table": "billing-proj.billing; DROP TABLE x"}, "is not a BigQuery table path"),
        ({"table": "just_a_table"}, "is not a BigQuery table path"),
        ({"table": "billing-proj.billing.some_view"}, "cannot tell the export kind"),
        ({"label_keys": ["Owner"]}, "is not a GCP label key"),
        ({"label_keys": ["owner", "owner"]}, "listed twice"),
        ({"maximum_bytes_billed": 10}, "greater than or equal"),
        ({"location": "mars central"}, "is not a Google Cloud region"),
        ({"export": "hourly"}, "Input should be"),
    ],
)
def test_bad_config_is_refused(overrides: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        export_config("http://127.0.0.1:1", **overrides)


def test_month_chunks_cut_at_month_boundaries() -> None:
    chunks = month_chunks(datetime(2026, 11, 20, tzinfo=UTC), datetime(2027, 1, 3, tzinfo=UTC))
    assert [c[0].date().isoformat() for c in chunks] == ["2026-11-20", "2026-12-01", "2027-01-01"]
    assert chunks[-1][1] == datetime(2027, 1, 3, tzinfo=UTC)


def test_config_loads_from_yaml(tmp_path: Path) -> None:
    from spendwatch.config import load_config

    path = tmp_path / "spendwatch.yaml"
    path.write_text(
        "sources:\n"
        "  - name: gcp\n"
        "    type: gcp-billing-export\n"
        f"    table: {TABLE}\n"
        "    gcp: {project: billing-proj}\n"
        "    maximum_bytes_billed: 20000000000\n"
    )
    config = load_config(path)
    source = config.source("gcp")
    assert isinstance(source, GcpBillingExportConfig) and source.kind == "standard"
