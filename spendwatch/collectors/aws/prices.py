"""What a running AWS job costs per hour: a bundled table, config overrides, optionally the Pricing API.

Order of precedence for an instance type: ``prices:`` in the config, then the Pricing API (when
``pricing_api: true``; answers cached in the store for ``pricing_cache``), then the bundled table of
common CPU and GPU types below (on-demand, Linux, us-east-1, USD — an estimate elsewhere). A type that
none of them knows is reported with no cost (``cost_method: unpriced``) rather than a made-up one.

Special keys (overridable like any other): ``glue:dpu-hour``, ``glue:flex-dpu-hour``, ``athena:tb``,
``emr:uplift`` (EMR's fee as a fraction of the EC2 price), ``batch:vcpu-hour``, ``batch:gb-hour``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from spendwatch.collectors.aws.api import AwsApi

# On-demand $/hour, Linux, us-east-1 (public list prices; an estimate, not a bill).
EC2_HOURLY: Final = {
    "t3.medium": 0.0416,
    "t3.large": 0.0832,
    "m5.large": 0.096,
    "m5.xlarge": 0.192,
    "m5.2xlarge": 0.384,
    "m5.4xlarge": 0.768,
    "m5.8xlarge": 1.536,
    "m5.12xlarge": 2.304,
    "m5.24xlarge": 4.608,
    "m6i.large": 0.096,
    "m6i.xlarge": 0.192,
    "m6i.2xlarge": 0.384,
    "m6i.4xlarge": 0.768,
    "m7i.xlarge": 0.2016,
    "c5.xlarge": 0.17,
    "c5.2xlarge": 0.34,
    "c5.4xlarge": 0.68,
    "c5.9xlarge": 1.53,
    "c6i.xlarge": 0.17,
    "c6i.4xlarge": 0.68,
    "r5.xlarge": 0.252,
    "r5.2xlarge": 0.504,
    "r5.4xlarge": 1.008,
    "r6i.xlarge": 0.252,
    "r6i.2xlarge": 0.504,
    "r6i.4xlarge": 1.008,
    "g4dn.xlarge": 0.526,
    "g4dn.2xlarge": 0.752,
    "g4dn.12xlarge": 3.912,
    "g5.xlarge": 1.006,
    "g5.2xlarge": 1.212,
    "g5.12xlarge": 5.672,
    "g5.48xlarge": 16.288,
    "g6.xlarge": 0.8048,
    "p3.2xlarge": 3.06,
    "p3.8xlarge": 12.24,
    "p3.16xlarge": 24.48,
    "p4d.24xlarge": 32.7726,
    "p5.48xlarge": 98.32,
    "trn1.32xlarge": 21.50,
    "inf2.xlarge": 0.7582,
}
SAGEMAKER_HOURLY: Final = {
    "ml.t3.medium": 0.05,
    "ml.m5.large": 0.115,
    "ml.m5.xlarge": 0.23,
    "ml.m5.2xlarge": 0.461,
    "ml.m5.4xlarge": 0.922,
    "ml.m5.12xlarge": 2.765,
    "ml.c5.xlarge": 0.204,
    "ml.c5.2xlarge": 0.408,
    "ml.c5.4xlarge": 0.816,
    "ml.r5.xlarge": 0.302,
    "ml.g4dn.xlarge": 0.736,
    "ml.g4dn.12xlarge": 4.89,
    "ml.g5.xlarge": 1.408,
    "ml.g5.2xlarge": 1.515,
    "ml.g5.12xlarge": 7.09,
    "ml.g5.48xlarge": 20.36,
    "ml.p3.2xlarge": 3.825,
    "ml.p3.8xlarge": 14.688,
    "ml.p3.16xlarge": 28.152,
    "ml.p4d.24xlarge": 37.688,
    "ml.p5.48xlarge": 113.068,
    "ml.trn1.32xlarge": 24.725,
}
RATES: Final = {
    "glue:dpu-hour": 0.44,
    "glue:flex-dpu-hour": 0.29,
    "athena:tb": 5.0,
    "emr:uplift": 0.25,
    "batch:vcpu-hour": 0.04048,
    "batch:gb-hour": 0.004445,
}
_REGION_NAMES: Final = {
    "us-east-1": "US East (N. Virginia)",
    "us-east-2": "US East (Ohio)",
    "us-west-2": "US West (Oregon)",
    "eu-west-1": "EU (Ireland)",
    "eu-central-1": "EU (Frankfurt)",
    "ap-northeast-1": "Asia Pacific (Tokyo)",
    "ap-southeast-2": "Asia Pacific (Sydney)",
}


@dataclass(frozen=True)
class Price:
    hourly: float
    method: str  # "config", "pricing-api", "bundled"


class PriceTable:
    """Looks up $/hour per instance type (and the special rates) with the precedence above."""

    def __init__(
        self,
        overrides: dict[str, float],
        *,
        api: AwsApi | None = None,
        store: Any = None,
        source: str = "",
        now: datetime | None = None,
        cache_for: timedelta = timedelta(days=7),
    ) -> None:
        self.overrides = overrides
        self.api = api
        self.store = store
        self.source = source
        self.now = now
        self.cache_for = cache_for

    def rate(self, key: str) -> float:
        return float(self.overrides.get(key, RATES[key]))

    def instance(self, instance_type: str, region: str) -> Price | None:
        if instance_type in self.overrides:
            return Price(float(self.overrides[instance_type]), "config")
        if self.api is not None:
            found = self._from_pricing_api(instance_type, region)
            if found is not None:
                return Price(found, "pricing-api")
        bundled = SAGEMAKER_HOURLY.get(instance_type) or EC2_HOURLY.get(instance_type)
        return Price(bundled, "bundled") if bundled is not None else None

    def _from_pricing_api(self, instance_type: str, region: str) -> float | None:
        key = f"price:{region}:{instance_type}"
        cached = self.store.get_state(self.source, key) if self.store is not None else None
        if cached and self.now is not None:
            entry = json.loads(cached)
            if datetime.fromisoformat(entry["at"]) > self.now - self.cache_for:
                value = entry.get("hourly")
                return float(value) if value is not None else None
        price = self._ask(instance_type, region)
        if self.store is not None and self.now is not None:
            self.store.set_state(self.source, key, json.dumps({"hourly": price, "at": self.now.isoformat()}))
        return price

    def _ask(self, instance_type: str, region: str) -> float | None:
        assert self.api is not None
        sagemaker = instance_type.startswith("ml.")
        filters = [
            {"Type": "TERM_MATCH", "Field": "instanceType", "Value": instance_type},
            {"Type": "TERM_MATCH", "Field": "location", "Value": _REGION_NAMES.get(region, region)},
        ]
        if not sagemaker:
            filters += [
                {"Type": "TERM_MATCH", "Field": "operatingSystem", "Value": "Linux"},
                {"Type": "TERM_MATCH", "Field": "tenancy", "Value": "Shared"},
                {"Type": "TERM_MATCH", "Field": "preInstalledSw", "Value": "NA"},
                {"Type": "TERM_MATCH", "Field": "capacitystatus", "Value": "Used"},
            ]
        client = self.api.client("pricing", region="us-east-1")
        answer = self.api.call(
            client,
            "GetProducts",
            ServiceCode="AmazonSageMaker" if sagemaker else "AmazonEC2",
            Filters=filters,
            MaxResults=10,
        )
        return on_demand_hourly(answer.get("PriceList", []))


def on_demand_hourly(price_list: list[Any]) -> float | None:
    """The lowest positive on-demand USD hourly price in a ``GetProducts`` PriceList, if any."""
    prices = []
    for item in price_list:
        product = json.loads(item) if isinstance(item, str) else item
        for term in product.get("terms", {}).get("OnDemand", {}).values():
            for dimension in term.get("priceDimensions", {}).values():
                if str(dimension.get("unit", "")).lower() not in ("hrs", "hours", "hour"):
                    continue
                usd = dimension.get("pricePerUnit", {}).get("USD")
                if usd is not None and float(usd) > 0:
                    prices.append(float(usd))
    return min(prices) if prices else None
