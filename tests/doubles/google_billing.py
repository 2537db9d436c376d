"""Cloud Billing and Cloud Catalog REST APIs on the fake Google server (v1), with pageSize/pageToken paging.

Routes: ``GET /v1/billingAccounts``, ``GET /v1/billingAccounts/{id}/projects``,
``GET /v1/projects/{id}/billingInfo``, ``GET /v1/services``, ``GET /v1/services/{id}/skus``.
The real ``google.cloud.billing_v1`` clients (``transport="rest"``) run unchanged against it.
Other tests may register more routes on the same server (e.g. ``PUT /v1/projects/{id}/billingInfo``).
"""

from __future__ import annotations

from typing import Any

from tests.doubles.google import ApiError, ApiRequest, GoogleApiServer


def page_items(items: list[Any], request: ApiRequest, key: str, default_size: int = 50) -> dict[str, Any]:
    offset = int(request.query.get("pageToken") or 0)
    size = int(request.query.get("pageSize") or default_size) or default_size
    out: dict[str, Any] = {key: items[offset : offset + size]}
    if offset + size < len(items):
        out["nextPageToken"] = str(offset + size)
    return out


def sku(
    sku_id: str,
    description: str,
    price: float,
    *,
    regions: list[str],
    usage_type: str = "OnDemand",
    unit: str = "h",
    family: str = "Compute",
    group: str = "CPU",
) -> dict[str, Any]:
    units = int(price)
    return {
        "name": f"services/6F81-5844-456A/skus/{sku_id}",
        "skuId": sku_id,
        "description": description,
        "category": {
            "serviceDisplayName": "Compute Engine",
            "resourceFamily": family,
            "resourceGroup": group,
            "usageType": usage_type,
        },
        "serviceRegions": regions,
        "pricingInfo": [
            {
                "pricingExpression": {
                    "usageUnit": unit,
                    "displayQuantity": 1,
                    "tieredRates": [
                        {
                            "startUsageAmount": 0,
                            "unitPrice": {
                                "currencyCode": "USD",
                                "units": str(units),
                                "nanos": round((price - units) * 1e9),
                            },
                        }
                    ],
                    "baseUnit": "s",
                    "baseUnitConversionFactor": 3600,
                },
                "currencyConversionRate": 1,
                "effectiveTime": "2026-11-01T00:00:00Z",
            }
        ],
        "serviceProviderName": "Google",
    }


class FakeCloudBilling:
    def __init__(self, server: GoogleApiServer) -> None:
        self.accounts: list[dict[str, Any]] = []
        self.projects: dict[str, list[dict[str, Any]]] = {}
        self.skus: dict[str, list[dict[str, Any]]] = {}
        server.add_route("GET", "/v1/billingAccounts", self._accounts)
        server.add_route("GET", "/v1/billingAccounts/{account}/projects", self._projects)
        server.add_route("GET", "/v1/projects/{project}/billingInfo", self._billing_info)
        server.add_route("GET", "/v1/services", self._services)
        server.add_route("GET", "/v1/services/{service}/skus", self._skus)

    def add_account(
        self, account_id: str, name: str, *, open_: bool = True, projects: dict[str, bool] | None = None
    ) -> None:
        self.accounts.append(
            {
                "name": f"billingAccounts/{account_id}",
                "open": open_,
                "displayName": name,
                "masterBillingAccount": "",
                "currencyCode": "USD",
            }
        )
        self.projects[account_id] = [
            {
                "name": f"projects/{project}/billingInfo",
                "projectId": project,
                "billingAccountName": f"billingAccounts/{account_id}" if enabled else "",
                "billingEnabled": enabled,
            }
            for project, enabled in (projects or {}).items()
        ]

    def _accounts(self, request: ApiRequest) -> dict[str, Any]:
        return page_items(self.accounts, request, "billingAccounts")

    def _projects(self, request: ApiRequest) -> dict[str, Any]:
        account = request.params["account"]
        if account not in self.projects:
            raise ApiError(404, f"Billing account billingAccounts/{account} not found.")
        return page_items(self.projects[account], request, "projectBillingInfo")

    def _billing_info(self, request: ApiRequest) -> dict[str, Any]:
        for infos in self.projects.values():
            for info in infos:
                if info["projectId"] == request.params["project"]:
                    return info
        raise ApiError(404, f"Project {request.params['project']} not found.")

    def _services(self, request: ApiRequest) -> dict[str, Any]:
        services = [
            {"name": f"services/{s}", "serviceId": s, "displayName": s, "businessEntityName": "businessEntities/GCP"}
            for s in self.skus
        ]
        return page_items(services, request, "services")

    def _skus(self, request: ApiRequest) -> dict[str, Any]:
        return page_items(self.skus.get(request.params["service"], []), request, "skus", default_size=5000)
