"""AWS line item types and record types → FOCUS charge category and frequency.

The same table serves the CUR (``line_item_line_item_type``: ``SavingsPlanCoveredUsage``) and Cost
Explorer (``RECORD_TYPE``: ``Savings Plan Covered Usage``): names are compared squashed (lower case,
letters and digits only). It follows AWS's own FOCUS export: usage (on-demand, reserved, covered by a
Savings Plan) is ``Usage``; fees and commitments are ``Purchase``; taxes are ``Tax``; credits, refunds,
discounts and the Savings Plan negation that offsets covered usage are ``Credit``. Anything AWS adds
later lands in ``Adjustment`` — reported, never scored, never silently called usage.
"""

from __future__ import annotations

import re
from typing import Final

USAGE_TYPES: Final = ("Usage", "DiscountedUsage", "SavingsPlanCoveredUsage")
# What Cost Explorer's RECORD_TYPE dimension calls the usage record types.
CE_USAGE_RECORD_TYPES: Final = ("Usage", "DiscountedUsage", "Savings Plan Covered Usage")

_CATEGORY: Final = {
    "usage": ("Usage", "Usage-Based"),
    "discountedusage": ("Usage", "Usage-Based"),
    "savingsplancoveredusage": ("Usage", "Usage-Based"),
    "fee": ("Purchase", "One-Time"),
    "rifee": ("Purchase", "Recurring"),
    "recurringreservationfee": ("Purchase", "Recurring"),
    "upfrontreservationfee": ("Purchase", "One-Time"),
    "savingsplanrecurringfee": ("Purchase", "Recurring"),
    "savingsplanupfrontfee": ("Purchase", "One-Time"),
    "supportfee": ("Purchase", "Recurring"),
    "tax": ("Tax", "One-Time"),
    "credit": ("Credit", "One-Time"),
    "refund": ("Credit", "One-Time"),
    "savingsplannegation": ("Credit", "Usage-Based"),
    "discount": ("Credit", "Usage-Based"),
    "bundleddiscount": ("Credit", "Usage-Based"),
    "edpdiscount": ("Credit", "Usage-Based"),
    "enterprisediscountprogramdiscount": ("Credit", "Usage-Based"),
    "privateratediscount": ("Credit", "Usage-Based"),
    "privateratecarddiscount": ("Credit", "Usage-Based"),
    "distributordiscount": ("Credit", "Usage-Based"),
    "solutionproviderprogramdiscount": ("Credit", "Usage-Based"),
    "spdiscount": ("Credit", "Usage-Based"),
}
UNKNOWN: Final = ("Adjustment", "One-Time")

_SQUASH = re.compile(r"[^a-z0-9]")


def squash(name: str) -> str:
    """``Savings Plan Covered Usage`` → ``savingsplancoveredusage`` (how names are compared)."""
    return _SQUASH.sub("", name.lower())


def charge_of(line_item_type: str | None) -> tuple[str, str]:
    """(FOCUS charge category, charge frequency) for an AWS line item or record type."""
    if not line_item_type:
        return UNKNOWN
    return _CATEGORY.get(squash(line_item_type), UNKNOWN)


def category_sql(column: str) -> str:
    """A SQL CASE giving the charge category of ``column`` (works in DuckDB and Athena/Trino)."""
    return _case_sql(column, 0)


def frequency_sql(column: str) -> str:
    return _case_sql(column, 1)


def _case_sql(column: str, index: int) -> str:
    squashed = f"regexp_replace(lower({column}), '[^a-z0-9]', '')"
    by_value: dict[str, list[str]] = {}
    for key, pair in _CATEGORY.items():
        by_value.setdefault(pair[index], []).append(key)
    arms = " ".join(
        f"WHEN {squashed} IN ({', '.join(repr(k) for k in sorted(keys))}) THEN '{value}'"
        for value, keys in sorted(by_value.items())
    )
    return f"(CASE {arms} ELSE '{UNKNOWN[index]}' END)"


# FOCUS service categories of the AWS services spendwatch users meet most; others stay empty.
_SERVICE_CATEGORY: Final = {
    "AmazonEC2": "Compute",
    "AWSLambda": "Compute",
    "AmazonECS": "Compute",
    "AmazonEKS": "Compute",
    "AWSBatch": "Compute",
    "AmazonLightsail": "Compute",
    "AmazonS3": "Storage",
    "AmazonEFS": "Storage",
    "AmazonFSx": "Storage",
    "AmazonS3GlacierDeepArchive": "Storage",
    "AWSBackup": "Storage",
    "AmazonRDS": "Databases",
    "AmazonDynamoDB": "Databases",
    "AmazonElastiCache": "Databases",
    "AmazonRedshift": "Databases",
    "AmazonDocDB": "Databases",
    "AmazonNeptune": "Databases",
    "AmazonAthena": "Analytics",
    "AWSGlue": "Analytics",
    "ElasticMapReduce": "Analytics",
    "AmazonKinesis": "Analytics",
    "AmazonKinesisFirehose": "Analytics",
    "AmazonMSK": "Analytics",
    "AmazonES": "Analytics",
    "AmazonQuickSight": "Analytics",
    "AmazonSageMaker": "AI and Machine Learning",
    "AmazonBedrock": "AI and Machine Learning",
    "AmazonRekognition": "AI and Machine Learning",
    "AmazonTextract": "AI and Machine Learning",
    "AmazonComprehend": "AI and Machine Learning",
    "AmazonVPC": "Networking",
    "AmazonCloudFront": "Networking",
    "AWSDataTransfer": "Networking",
    "AmazonRoute53": "Networking",
    "AWSELB": "Networking",
    "AmazonApiGateway": "Networking",
    "AWSDirectConnect": "Networking",
    "AmazonCloudWatch": "Management and Governance",
    "AWSCloudTrail": "Management and Governance",
    "AWSConfig": "Management and Governance",
    "AWSCostExplorer": "Management and Governance",
    "AWSSecretsManager": "Security",
    "awskms": "Security",
    "AmazonGuardDuty": "Security",
    "AWSSecurityHub": "Security",
    "AmazonSNS": "Integration",
    "AWSQueueService": "Integration",
    "AmazonSQS": "Integration",
    "AWSEvents": "Integration",
    "AmazonStates": "Integration",
    "AWSSupportBusiness": "Other",
    "AWSSupportEnterprise": "Other",
}
# Cost Explorer names services by their marketing name; the keywords pick the same categories.
_CE_KEYWORDS: Final = (
    ("sagemaker", "AI and Machine Learning"),
    ("bedrock", "AI and Machine Learning"),
    ("elastic compute cloud", "Compute"),
    ("ec2", "Compute"),
    ("lambda", "Compute"),
    ("container", "Compute"),
    ("kubernetes", "Compute"),
    ("simple storage service", "Storage"),
    ("elastic file system", "Storage"),
    ("glacier", "Storage"),
    ("relational database", "Databases"),
    ("dynamodb", "Databases"),
    ("elasticache", "Databases"),
    ("redshift", "Databases"),
    ("athena", "Analytics"),
    ("glue", "Analytics"),
    ("elastic mapreduce", "Analytics"),
    ("emr", "Analytics"),
    ("kinesis", "Analytics"),
    ("cloudfront", "Networking"),
    ("virtual private cloud", "Networking"),
    ("data transfer", "Networking"),
    ("route 53", "Networking"),
    ("load balancing", "Networking"),
    ("cloudwatch", "Management and Governance"),
    ("cloudtrail", "Management and Governance"),
    ("key management", "Security"),
    ("secrets manager", "Security"),
    ("guardduty", "Security"),
    ("notification service", "Integration"),
    ("queue service", "Integration"),
    ("tax", "Other"),
)


def service_category(product_code: str | None, service_name: str | None = None) -> str | None:
    """The FOCUS service category of an AWS service, by product code or Cost Explorer name."""
    if product_code and product_code in _SERVICE_CATEGORY:
        return _SERVICE_CATEGORY[product_code]
    name = (service_name or product_code or "").lower()
    for keyword, category in _CE_KEYWORDS:
        if keyword in name:
            return category
    return None


def service_category_sql(product_column: str) -> str:
    """A SQL CASE mapping product codes to FOCUS service categories (DuckDB and Trino)."""
    by_category: dict[str, list[str]] = {}
    for code, category in _SERVICE_CATEGORY.items():
        by_category.setdefault(category, []).append(code)
    arms = " ".join(
        f"WHEN {product_column} IN ({', '.join(repr(c) for c in sorted(codes))}) THEN '{category}'"
        for category, codes in sorted(by_category.items())
    )
    return f"(CASE {arms} ELSE NULL END)"
