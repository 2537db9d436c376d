"""``gcp-billing-accounts``: billing accounts, their projects (billing enabled or not) and Catalog SKU prices.

Uses the real ``google-cloud-billing`` client (``CloudBillingClient``, ``CloudCatalogClient``) over
REST. What it writes, in one transaction per run (replacing this source's previous rows):

* ``gcp_billing_accounts`` — id, display name, open, reseller parent, currency;
* ``gcp_projects`` — project id, linked billing account, ``billing_enabled``.

Readers: ``gcp_projects(store)`` (with display names from the billing export) for labelling series,
and ``billing_enabled_projects(store)`` — the projects a kill switch may act on and the default
project list of ``gcp-jobs``.

Prices: for the configured Catalog services (Compute Engine by default) and regions, on-demand
per-vCPU/GiB-hour prices per machine family and per-GPU-hour prices are read from the Cloud Billing
Catalog and cached in the store (``source_state``, source ``gcp-catalog``, key
``prices:<region>:<currency>``) for ``catalog.refresh`` (default 7 days), so a price list of tens of
thousands of SKUs is fetched weekly, not hourly. ``cached_catalog_prices(store, region)`` returns
them as ``PriceOverrides`` for the job estimates.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from spendwatch.collectors.base import SOURCES, Batch, CollectWindow, Source, SourceConfig
from spendwatch.collectors.gcp.common import RetrySettings, call_google, check_region, make_retry
from spendwatch.collectors.gcp.prices import PriceOverrides
from spendwatch.config_types import Duration
from spendwatch.connections import GcpConnection, gcp_client_options, gcp_credentials
from spendwatch.plugins import StrictModel
from spendwatch.store import Store

CATALOG_STATE = "gcp-catalog"
COMPUTE_ENGINE = "6F81-5844-456A"
_ACCOUNT_ID = re.compile(r"^[0-9A-F]{6}-[0-9A-F]{6}-[0-9A-F]{6}$")
_CORE = re.compile(r"^(?P<family>[A-Z][A-Z0-9]*) (?:Predefined |AMD |Intel |Arm )*Instance Core running in ")
_RAM = re.compile(r"^(?P<family>[A-Z][A-Z0-9]*) (?:Predefined |AMD |Intel |Arm )*Instance Ram running in ")
_GPU = re.compile(r"^Nvidia (?P<tesla>Tesla )?(?P<model>[A-Za-z0-9]+(?: \d+GB)?) GPU running in ")


class CatalogSettings(StrictModel):
    enabled: bool = True
    services: list[str] = Field(
        default_factory=lambda: [COMPUTE_ENGINE], description="Catalog service ids (Compute Engine: 6F81-5844-456A)"
    )
    regions: list[str] = Field(default_factory=lambda: ["us-central1"], description="regions to price jobs in")
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    refresh: Duration = Field(default=timedelta(days=7), description="how long cached prices are used")

    @field_validator("regions")
    @classmethod
    def _regions(cls, values: list[str]) -> list[str]:
        return [check_region(v) for v in values]


class GcpBillingAccountsConfig(SourceConfig):
    type: Literal["gcp-billing-accounts"] = "gcp-billing-accounts"
    every: Duration = Field(default=timedelta(hours=6), description="how often the daemon collects")
    gcp: GcpConnection = Field(default_factory=GcpConnection)
    billing_accounts: list[str] = Field(
        default_factory=list, description="only these billing account ids (default: every account visible)"
    )
    include_closed: bool = Field(default=False, description="also list projects of closed billing accounts")
    catalog: CatalogSettings = Field(default_factory=CatalogSettings)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    page_size: int = Field(default=200, ge=1, le=1000)

    @field_validator("billing_accounts")
    @classmethod
    def _accounts(cls, values: list[str]) -> list[str]:
        out = []
        for value in values:
            account = value.removeprefix("billingAccounts/").upper()
            if not _ACCOUNT_ID.match(account):
                raise ValueError(f"{value!r} is not a billing account id like 012345-6789AB-CDEF01")
            out.append(account)
        return out


@dataclass(frozen=True)
class GcpProject:
    project_id: str
    name: str | None
    billing_account_id: str | None
    billing_enabled: bool


def gcp_projects(store: Store) -> list[GcpProject]:
    """Every project a gcp-billing-accounts source saw, with its display name from the billing export."""
    rows = store.query(
        """
        WITH latest AS (
            SELECT project_id, arg_max(billing_account_id, seen_at) AS account,
                   arg_max(billing_enabled, seen_at) AS enabled
            FROM gcp_projects GROUP BY project_id
        ), names AS (
            SELECT sub_account_id, arg_max(sub_account_name, charge_period_start) AS name
            FROM cost_lines WHERE provider = 'gcp' AND sub_account_name IS NOT NULL GROUP BY sub_account_id
        )
        SELECT l.project_id, n.name, l.account, l.enabled
        FROM latest l LEFT JOIN names n ON n.sub_account_id = l.project_id
        ORDER BY l.project_id
        """
    )
    return [GcpProject(r[0], r[1], r[2], bool(r[3])) for r in rows]


def billing_enabled_projects(store: Store) -> list[str]:
    return [p.project_id for p in gcp_projects(store) if p.billing_enabled]


def cached_catalog_prices(store: Store, region: str, currency: str = "USD") -> PriceOverrides | None:
    text = store.get_state(CATALOG_STATE, f"prices:{region}:{currency}")
    if text is None:
        return None
    return PriceOverrides.model_validate(json.loads(text)["prices"])


def _unit_price(sku: Any) -> float | None:
    for info in sku.pricing_info:
        rates = info.pricing_expression.tiered_rates
        for rate in reversed(list(rates)):  # the last tier is the marginal on-demand rate
            price = rate.unit_price.units + rate.unit_price.nanos / 1e9
            if price > 0:
                return float(price)
    return None


def prices_from_skus(skus: list[Any], region: str, currency: str) -> PriceOverrides:
    """On-demand vCPU/GiB-hour prices per machine family and GPU-hour prices for ``region``."""
    vcpu: dict[str, float] = {}
    gib: dict[str, float] = {}
    gpu: dict[str, float] = {}
    for sku in skus:
        if sku.category.usage_type != "OnDemand" or region not in list(sku.service_regions):
            continue
        price = _unit_price(sku)
        if price is None:
            continue
        description = sku.description
        if match := _CORE.match(description):
            vcpu[match["family"].lower()] = price
        elif match := _RAM.match(description):
            gib[match["family"].lower()] = price
        elif match := _GPU.match(description):
            name = "nvidia-" + ("tesla-" if match["tesla"] else "") + match["model"].lower().replace(" ", "-")
            gpu[name] = price
    return PriceOverrides(currency=currency, vcpu_hour=vcpu or None, gib_hour=gib or None, gpu_hour=gpu or None)


@SOURCES.register("gcp-billing-accounts")
class GcpBillingAccountsSource(Source):
    config_model: ClassVar[type[SourceConfig]] = GcpBillingAccountsConfig
    config: GcpBillingAccountsConfig

    def collect(self, window: CollectWindow) -> Iterator[Batch]:
        client = self._client("cloud_billing_client", "CloudBillingClient")
        accounts = self._accounts(client)
        projects: list[tuple[str, str | None, bool]] = []
        for account in accounts:
            if not account["open"] and not self.config.include_closed:
                continue
            projects += self._projects(client, account["id"])
        self._write(accounts, projects, window.until)
        self.context.progress(f"{self.name}: {len(accounts)} billing account(s), {len(projects)} project(s)")
        if self.config.catalog.enabled:
            self._refresh_prices(window.until)
        # It writes metadata, not cost lines: nothing to yield, but collect() is still a generator.
        yield from ()

    def _client(self, injected: str, name: str) -> Any:
        client = self.context.clients.get(injected)
        if client is not None:
            return client
        from google.cloud import billing_v1

        return getattr(billing_v1, name)(
            credentials=gcp_credentials(self.config.gcp),
            transport="rest",
            client_options=gcp_client_options(self.config.gcp, "cloudbilling") or None,
        )

    def _accounts(self, client: Any) -> list[dict[str, Any]]:
        retry = make_retry(self.config.retry)
        found = call_google(
            lambda: list(
                client.list_billing_accounts(
                    request={"page_size": self.config.page_size}, retry=retry, timeout=self.config.retry.call_seconds
                )
            ),
            source=self.name,
            doing="listing billing accounts",
            method="cloudbilling.billingAccounts.list",
            resource="the billing accounts visible to these credentials",
        )
        self.context.count("gcp_api_calls")
        accounts = []
        for account in found:
            account_id = account.name.removeprefix("billingAccounts/")
            if self.config.billing_accounts and account_id not in self.config.billing_accounts:
                continue
            accounts.append(
                {
                    "id": account_id,
                    "display_name": account.display_name or None,
                    "open": bool(account.open_),
                    "master": account.master_billing_account.removeprefix("billingAccounts/") or None,
                    "currency": getattr(account, "currency_code", None) or None,
                }
            )
        missing = set(self.config.billing_accounts) - {a["id"] for a in accounts}
        if missing:
            from spendwatch.errors import PermissionDeniedError

            raise PermissionDeniedError(
                f"source {self.name}: billing account(s) {', '.join(sorted(missing))} are not visible: the "
                "credentials need billing.accounts.list (roles/billing.viewer) on them"
            )
        return accounts

    def _projects(self, client: Any, account_id: str) -> list[tuple[str, str | None, bool]]:
        retry = make_retry(self.config.retry)
        name = f"billingAccounts/{account_id}"
        infos = call_google(
            lambda: list(
                client.list_project_billing_info(
                    request={"name": name, "page_size": self.config.page_size},
                    retry=retry,
                    timeout=self.config.retry.call_seconds,
                )
            ),
            source=self.name,
            doing="listing the projects of a billing account",
            method="cloudbilling.billingAccounts.projects.list",
            resource=name,
        )
        self.context.count("gcp_api_calls")
        out = []
        for info in infos:
            linked = info.billing_account_name.removeprefix("billingAccounts/") or None
            out.append((info.project_id, linked if info.billing_enabled else None, bool(info.billing_enabled)))
        return out

    def _write(
        self, accounts: list[dict[str, Any]], projects: list[tuple[str, str | None, bool]], now: datetime
    ) -> None:
        with self.context.store.transaction() as con:
            con.execute("DELETE FROM gcp_billing_accounts WHERE source = ?", [self.name])
            con.execute("DELETE FROM gcp_projects WHERE source = ?", [self.name])
            for a in accounts:
                con.execute(
                    "INSERT INTO gcp_billing_accounts VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [self.name, a["id"], a["display_name"], a["open"], a["master"], a["currency"], now],
                )
            for project_id, account_id, enabled in {p[0]: p for p in projects}.values():
                con.execute(
                    "INSERT INTO gcp_projects VALUES (?, ?, ?, ?, ?)", [self.name, project_id, account_id, enabled, now]
                )

    def _refresh_prices(self, now: datetime) -> None:
        catalog = self.config.catalog
        stale = []
        for region in catalog.regions:
            text = self.context.store.get_state(CATALOG_STATE, f"prices:{region}:{catalog.currency}")
            fetched = datetime.fromisoformat(json.loads(text)["fetched_at"]) if text else None
            if fetched is None or now - fetched >= catalog.refresh:
                stale.append(region)
        if not stale:
            return
        client = self._client("cloud_catalog_client", "CloudCatalogClient")
        retry = make_retry(self.config.retry)
        skus: list[Any] = []
        for service in catalog.services:
            parent = f"services/{service}"

            def listing(parent: str = parent) -> list[Any]:
                return list(
                    client.list_skus(
                        request={"parent": parent, "currency_code": catalog.currency, "page_size": 5000},
                        retry=retry,
                        timeout=self.config.retry.call_seconds,
                    )
                )

            skus += call_google(
                listing,
                source=self.name,
                doing="reading Cloud Billing Catalog prices",
                method="cloudbilling.services.skus.list",
                resource=parent,
            )
            self.context.count("gcp_api_calls")
        with self.context.store.transaction() as con:
            for region in stale:
                prices = prices_from_skus(skus, region, catalog.currency)
                value = {
                    "fetched_at": now.isoformat(),
                    "skus": len(skus),
                    "prices": prices.model_dump(exclude_none=True),
                }
                self.context.store.set_state(
                    CATALOG_STATE, f"prices:{region}:{catalog.currency}", json.dumps(value), con=con
                )
