"""Cost Explorer answers, shaped like the real ``GetCostAndUsage`` response."""

from __future__ import annotations

from typing import Any

Group = tuple[list[str], float, float]


def ce_page(
    periods: list[tuple[str, str, list[Group], bool]],
    *,
    token: str | None = None,
    accounts: dict[str, str] | None = None,
    unit: str = "USD",
) -> dict[str, Any]:
    """One page: ``periods`` of (start, end, [(keys, unblended, amortized)], estimated)."""
    page: dict[str, Any] = {
        "GroupDefinitions": [],
        "ResultsByTime": [
            {
                "TimePeriod": {"Start": start, "End": end},
                "Total": {},
                "Groups": [
                    {
                        "Keys": keys,
                        "Metrics": {
                            "UnblendedCost": {"Amount": f"{billed:.10f}", "Unit": unit},
                            "AmortizedCost": {"Amount": f"{effective:.10f}", "Unit": unit},
                        },
                    }
                    for keys, billed, effective in groups
                ],
                "Estimated": estimated,
            }
            for start, end, groups, estimated in periods
        ],
        "DimensionValueAttributes": [
            {"Value": account, "Attributes": {"description": name}} for account, name in (accounts or {}).items()
        ],
    }
    if token:
        page["NextPageToken"] = token
    return page
