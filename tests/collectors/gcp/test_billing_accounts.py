"""gcp-billing-accounts through the real google-cloud-billing REST clients against the fake Cloud Billing API."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pydantic import ValidationError

from spendwatch.collect import collect_source
from spendwatch.collectors.gcp.billing import (
    CATALOG_STATE,
    GcpBillingAccountsConfig,
    billing_enabled_projects,
    cached_catalog_prices,
    gcp_projects,
)
from spendwatch.collectors.gcp.prices import BUNDLED
from spendwatch.store import Store
from spendwatch.store.schema import COST_LINE_SCHEMA
from tests.doubles.clock import FixedClock
from tests.doubles.google import ApiRequest, GoogleApiServer, permission_denied
from tests.doubles.google_billing import FakeCloudBilling, sku

ACCOUNT = "0A1B2C-3D4E5F-6A7B8C"
CLOSED = "FFFFFF-000000-111111"


@pytest.fixture
def billing(google_api: GoogleApiServer) -> FakeCloudBilling:
    fake = FakeCloudBilling(google_api)
    fake.add_account(
        ACCOUNT,
        "Main",
        projects={
            "analytics-warehouse": True,
            "ml-research": True,
            "old-sandbox": False,
            **{f"team-{i:02d}": True for i in range(7)},
        },
    )
    fake.add_account(CLOSED, "Closed", open_=False, projects={"legacy-app": True})
    fake.skus["6F81-5844-456A"] = [
        sku("A1", "N2 Instance Core running in Americas", 0.04, regions=["us-central1", "us-east1"]),
        sku("A2", "N2 Instance Ram running in Americas", 0.005, regions=["us-central1"], group="RAM"),
        sku("A3", "N2 Instance Core running in Americas", 0.01, regions=["us-central1"], usage_type="Preemptible"),
        sku("A4", "Nvidia Tesla T4 GPU running in Americas", 0.4, regions=["us-central1"], group="GPU"),
        sku("A5", "Nvidia L4 GPU running in Americas", 0.6, regions=["us-central1"], group="GPU"),
        sku("A6", "N2 Instance Core running in Belgium", 0.05, regions=["europe-west1"]),
        sku("A7", "Nvidia H100 80GB GPU running in Americas", 12.0, regions=["us-central1"], group="GPU"),
    ]
    return fake


def _config(endpoint: str, **overrides: Any) -> GcpBillingAccountsConfig:
    values: dict[str, Any] = {
        "name": "gcp-accounts",
        "gcp": {"anonymous": True, "endpoints": {"cloudbilling": endpoint}},
        "page_size": 3,
        "retry": {"initial": "0.01s", "maximum": "0.05s", "deadline": "60s"},
    }
    values.update(overrides)
    return GcpBillingAccountsConfig.model_validate(values)


@pytest.fixture
def store(tmp_path: Path, clock: FixedClock) -> Store:
    return Store(tmp_path / "store.duckdb", clock=clock)


def test_accounts_and_projects_are_stored_with_paging(
    google_api: GoogleApiServer, billing: FakeCloudBilling, store: Store, clock: FixedClock
) -> None:
    google_api.fail("GET", "/v1/billingAccounts", 503, times=1)  # retried
    google_api.fail("GET", "/v1/billingAccounts/{a}/projects", 429, times=1)  # retried
    run = collect_source(_config(google_api.endpoint), store, clock)
    assert run.error is None, run.error
    assert store.query("SELECT billing_account_id, display_name, open FROM gcp_billing_accounts ORDER BY 1") == [
        (ACCOUNT, "Main", True),
        (CLOSED, "Closed", False),
    ]
    projects = {p.project_id: p for p in gcp_projects(store)}
    assert len(projects) == 10 and "legacy-app" not in projects  # closed account skipped
    assert projects["old-sandbox"].billing_enabled is False and projects["old-sandbox"].billing_account_id is None
    assert projects["ml-research"].billing_account_id == ACCOUNT
    assert "old-sandbox" not in billing_enabled_projects(store)
    pages = [c.query.get("pageToken") for c in google_api.calls("GET", "/v1/billingAccounts/{a}/projects")]
    assert pages.count("3") >= 1 and "9" in pages  # 10 projects in pages of 3
    assert all(c.query.get("pageSize") == "3" for c in google_api.calls("GET", "/v1/billingAccounts/{a}/projects"))


def test_projects_get_display_names_from_the_billing_export(
    google_api: GoogleApiServer, billing: FakeCloudBilling, store: Store, clock: FixedClock
) -> None:
    assert collect_source(_config(google_api.endpoint), store, clock).error is None
    start = datetime(2026, 11, 19, tzinfo=UTC)
    line = {
        "provider": "gcp",
        "sub_account_id": "ml-research",
        "sub_account_name": "ML Research",
        "charge_category": "Usage",
        "charge_period_start": start,
        "charge_period_end": datetime(2026, 11, 19, 1, tzinfo=UTC),
        "billed_cost": 1.0,
        "effective_cost": 1.0,
        "billing_currency": "USD",
    }
    store.replace_cost_lines(
        "gcp-billing", start, datetime(2026, 11, 20, tzinfo=UTC), pa.Table.from_pylist([line], schema=COST_LINE_SCHEMA)
    )
    names = {p.project_id: p.name for p in gcp_projects(store)}
    assert names["ml-research"] == "ML Research" and names["analytics-warehouse"] is None


def test_a_second_run_replaces_the_projects(
    google_api: GoogleApiServer, billing: FakeCloudBilling, store: Store, clock: FixedClock
) -> None:
    config = _config(google_api.endpoint, include_closed=True)
    assert collect_source(config, store, clock).error is None
    assert "legacy-app" in billing_enabled_projects(store)
    billing.projects[ACCOUNT] = [p for p in billing.projects[ACCOUNT] if p["projectId"] != "ml-research"]
    assert collect_source(config, store, clock).error is None
    assert "ml-research" not in {p.project_id for p in gcp_projects(store)}


def test_catalog_prices_are_parsed_for_the_region_and_cached(
    google_api: GoogleApiServer, billing: FakeCloudBilling, store: Store, clock: FixedClock
) -> None:
    config = _config(google_api.endpoint)
    assert collect_source(config, store, clock).error is None
    prices = cached_catalog_prices(store, "us-central1")
    assert prices is not None
    assert prices.vcpu_hour == {"n2": pytest.approx(0.04)}  # the preemptible and Belgian SKUs are ignored
    assert prices.gib_hour == {"n2": pytest.approx(0.005)}
    assert prices.gpu_hour == {
        "nvidia-tesla-t4": pytest.approx(0.4),
        "nvidia-l4": pytest.approx(0.6),
        "nvidia-h100-80gb": pytest.approx(12.0),
    }
    table = BUNDLED.merged(prices)
    assert table.machine_hourly("n2-standard-8") == pytest.approx(8 * 0.04 + 32 * 0.005)
    [call] = google_api.calls("GET", "/v1/services/{s}/skus")
    assert call.query["currencyCode"] == "USD"
    state = json.loads(store.get_state(CATALOG_STATE, "prices:us-central1:USD") or "{}")
    assert state["skus"] == 7

    clock.advance(days=1)
    assert collect_source(config, store, clock).error is None
    assert len(google_api.calls("GET", "/v1/services/{s}/skus")) == 1  # cached for a week
    clock.advance(days=7)
    assert collect_source(config, store, clock).error is None
    assert len(google_api.calls("GET", "/v1/services/{s}/skus")) == 2


def test_403_names_the_permission_and_the_account(
    google_api: GoogleApiServer, billing: FakeCloudBilling, store: Store, clock: FixedClock
) -> None:
    def deny(request: ApiRequest) -> None:
        raise permission_denied("billing.resourceAssociations.list", f"billingAccounts/{request.params['account']}")

    google_api.add_route("GET", "/v1/billingAccounts/{account}/projects", deny)
    run = collect_source(_config(google_api.endpoint), store, clock)
    assert run.error is not None and "\n" not in run.error
    assert "need billing.resourceAssociations.list on billingAccounts/0A1B2C-3D4E5F-6A7B8C" in run.error
    assert store.query("SELECT count(*) FROM gcp_projects") == [(0,)]  # nothing half-written


def test_a_configured_account_that_is_not_visible_is_an_error(
    google_api: GoogleApiServer, billing: FakeCloudBilling, store: Store, clock: FixedClock
) -> None:
    run = collect_source(_config(google_api.endpoint, billing_accounts=["012345-6789AB-CDEF01"]), store, clock)
    assert run.error is not None and "012345-6789AB-CDEF01 are not visible" in run.error


def test_persistent_500s_give_up_with_one_line(
    google_api: GoogleApiServer, billing: FakeCloudBilling, store: Store, clock: FixedClock
) -> None:
    google_api.fail("GET", "/v1/billingAccounts", 500, times=1000)
    # 3 s of retries 0.01-0.02 s apart: at least three attempts even when a loopback call takes 0.5 s (a loaded machine).
    config = _config(google_api.endpoint, retry={"initial": "0.01s", "maximum": "0.02s", "deadline": "3s"})
    run = collect_source(config, store, clock)
    assert run.error is not None and "kept failing after retries" in run.error and "\n" not in run.error
    assert len(google_api.calls("GET", "/v1/billingAccounts")) > 2


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"billing_accounts": ["not-an-account"]}, "is not a billing account id"),
        ({"catalog": {"regions": ["Mars"]}}, "is not a Google Cloud region"),
        ({"catalog": {"currency": "usd"}}, "should match pattern"),
        ({"page_size": 0}, "greater than or equal"),
        ({"page_size": 5000}, "less than or equal"),
    ],
)
def test_bad_config_is_refused(overrides: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        _config("http://127.0.0.1:1", **overrides)
