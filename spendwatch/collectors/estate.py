"""The simulated estate's catalogue: accounts, people, steady cost streams and daily/weekly shapes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np


@dataclass(frozen=True)
class Account:
    provider: str
    account_id: str
    name: str
    region: str


@dataclass(frozen=True)
class Person:
    email: str
    team: str


@dataclass(frozen=True)
class Stream:
    """A steady background cost: one service in one account, optionally one resource and owner."""

    account: Account
    service: str
    category: str
    sku: str
    daily: float
    weekly: str = "flat"  # flat | weekday | mild
    hourly: str = "flat"  # flat | business | nightly
    growth: float = 0.001  # per day
    noise: float = 0.06
    resource: str | None = None
    owner: str | None = None
    team: str | None = None
    env: str = "prod"
    # Kubernetes: the cluster / namespace / workload this cost ran in (EKS split cost, GKE cost allocation).
    cluster: str | None = None
    namespace: str | None = None
    workload: str | None = None


@dataclass(frozen=True)
class Incident:
    """An injected incident, with what a detector should name for it."""

    key: str
    title: str
    provider: str
    sub_account_id: str
    service_name: str
    culprit_user: str | None
    culprit_job: str | None
    start: datetime
    end: datetime | None
    expected_alert: bool


ACCOUNTS = {
    "ml": Account("aws", "210987654321", "ml-research", "us-east-1"),
    "dp": Account("aws", "345678901234", "data-platform", "us-east-1"),
    "prod": Account("aws", "456789012345", "prod-serving", "eu-west-1"),
    "sandbox": Account("aws", "567890123456", "analytics-sandbox", "us-west-2"),
    "gtrain": Account("gcp", "ml-training-prod", "ML Training", "us-central1"),
    "gwh": Account("gcp", "analytics-warehouse", "Analytics Warehouse", "US"),
    "glake": Account("gcp", "data-lake-dev", "Data Lake (dev)", "europe-west4"),
    "gserve": Account("gcp", "recsys-serving", "Recsys Serving", "us-east1"),
    # Kubernetes (issue 16): an EKS cluster in its own account and a GKE cluster in its own project, so
    # their series are new ones and the four original incidents keep their figures.
    "eks": Account("aws", "678901234567", "ml-platform", "us-west-2"),
    "gke": Account("gcp", "ml-gke-research", "ML GKE Research", "us-central1"),
}
EKS_CLUSTER = "eks-ml-train"
GKE_CLUSTER = "gke-research"

TEAMS = {
    "ml-research": ["ana.lopez", "ben.okafor", "chen.wei", "divya.rao", "erik.lund", "fatima.zahra"],
    "data-platform": ["omar.haddad", "petra.novak", "quinn.reilly", "rosa.mendes", "sam.taylor"],
    "analytics": ["dana.kim", "eli.cohen", "farah.aziz", "gus.moreno", "hana.sato", "ivan.petrov", "june.park"],
    "serving": ["kai.muller", "lena.berg", "mo.ali", "nina.costa"],
}
PEOPLE = [Person(f"{name}@example.com", team) for team, names in TEAMS.items() for name in names]


def streams() -> list[Stream]:
    a = ACCOUNTS
    return [
        Stream(
            a["ml"],
            "Amazon Elastic Compute Cloud",
            "Compute",
            "BoxUsage:g5.12xlarge",
            2600,
            "mild",
            "business",
            resource="i-0a1b2c3d4e5f60001",
            owner="chen.wei@example.com",
            team="ml-research",
            env="dev",
        ),
        Stream(
            a["ml"],
            "Amazon SageMaker",
            "AI and Machine Learning",
            "Notebook:ml.g5.xlarge",
            420,
            "weekday",
            "business",
            owner="ana.lopez@example.com",
            team="ml-research",
            env="dev",
        ),
        Stream(
            a["ml"],
            "Amazon Simple Storage Service",
            "Storage",
            "TimedStorage-ByteHrs",
            380,
            growth=0.002,
            resource="arn:aws:s3:::ml-datasets",
            team="ml-research",
        ),
        Stream(
            a["dp"],
            "Amazon Simple Storage Service",
            "Storage",
            "TimedStorage-ByteHrs",
            310,
            growth=0.0015,
            resource="arn:aws:s3:::dp-lake-raw",
            owner="petra.novak@example.com",
            team="data-platform",
        ),
        Stream(
            a["dp"],
            "Amazon Simple Storage Service",
            "Storage",
            "TimedStorage-ByteHrs",
            45,
            resource="arn:aws:s3:::dp-tmp-shuffle",
            owner="omar.haddad@example.com",
            team="data-platform",
        ),
        Stream(
            a["dp"],
            "Amazon Redshift",
            "Databases",
            "Node:ra3.4xlarge",
            780,
            resource="dp-warehouse",
            team="data-platform",
        ),
        Stream(
            a["dp"],
            "AWS Data Transfer",
            "Networking",
            "DataTransfer-Out-Bytes",
            160,
            "mild",
            "business",
            team="data-platform",
        ),
        Stream(
            a["prod"],
            "Amazon Elastic Compute Cloud",
            "Compute",
            "BoxUsage:c6i.4xlarge",
            3100,
            "mild",
            growth=0.0012,
            resource="asg-recsys-api",
            owner="kai.muller@example.com",
            team="serving",
        ),
        Stream(
            a["prod"],
            "Amazon Relational Database Service",
            "Databases",
            "InstanceUsage:db.r6g.2xlarge",
            640,
            resource="arn:aws:rds:eu-west-1:456789012345:db:orders",
            owner="lena.berg@example.com",
            team="serving",
        ),
        Stream(
            a["prod"],
            "Amazon DynamoDB",
            "Databases",
            "ReadCapacityUnit-Hrs",
            230,
            "mild",
            "business",
            team="serving",
            owner="mo.ali@example.com",
        ),
        Stream(a["prod"], "AWS Lambda", "Compute", "Lambda-GB-Second", 95, "mild", "business", team="serving"),
        Stream(a["prod"], "Amazon CloudWatch", "Management and Governance", "MetricMonitorUsage", 120, team="serving"),
        Stream(
            a["sandbox"],
            "Amazon Elastic Compute Cloud",
            "Compute",
            "BoxUsage:m6i.2xlarge",
            210,
            "weekday",
            "business",
            owner="gus.moreno@example.com",
            team="analytics",
            env="dev",
        ),
        Stream(
            a["gtrain"],
            "Compute Engine",
            "Compute",
            "N2 Instance Core",
            1200,
            "mild",
            "business",
            owner="divya.rao@example.com",
            team="ml-research",
            env="dev",
        ),
        Stream(
            a["gtrain"],
            "Cloud Storage",
            "Storage",
            "Standard Storage US Multi-region",
            260,
            growth=0.002,
            resource="gs://ml-training-checkpoints",
            team="ml-research",
        ),
        Stream(a["gwh"], "BigQuery", "Databases", "Active Logical Storage", 340, growth=0.0015, team="analytics"),
        Stream(a["gwh"], "Cloud Logging", "Management and Governance", "Log Volume", 75, team="analytics"),
        Stream(
            a["glake"],
            "Cloud Storage",
            "Storage",
            "Standard Storage Europe",
            190,
            growth=0.002,
            resource="gs://data-lake-dev-raw",
            owner="rosa.mendes@example.com",
            team="data-platform",
            env="dev",
        ),
        Stream(
            a["glake"],
            "Cloud SQL",
            "Databases",
            "Cloud SQL for PostgreSQL: Regional - vCPU",
            150,
            team="data-platform",
            env="dev",
        ),
        Stream(
            a["gserve"],
            "Kubernetes Engine",
            "Compute",
            "Autopilot Pod vCPU",
            2300,
            "mild",
            "business",
            growth=0.0012,
            resource="gke-recsys-prod",
            owner="nina.costa@example.com",
            team="serving",
        ),
        Stream(
            a["gserve"], "Networking", "Networking", "Network Internet Egress", 260, "mild", "business", team="serving"
        ),
        Stream(
            a["gserve"],
            "Cloud Pub/Sub",
            "Integration",
            "Message Delivery Basic",
            85,
            "mild",
            "business",
            team="serving",
        ),
    ]


def k8s_streams() -> list[Stream]:
    """The workloads of the two clusters (generated after ``streams()``, so the rest is unchanged)."""
    # (account, cluster, namespace, Kind/name, $/day, owner, team, weekly, hourly, env)
    workloads = [
        ("eks", EKS_CLUSTER, "serving", "Deployment/embeddings-api", 520, "mo.ali", "serving", "mild", "business",
         "prod"),
        ("eks", EKS_CLUSTER, "research", "Deployment/jupyterhub", 310, "chen.wei", "ml-research", "weekday", "business",
         "dev"),
        ("eks", EKS_CLUSTER, "data", "CronJob/feature-backfill", 260, "sam.taylor", "data-platform", "flat", "nightly",
         "prod"),
        ("gke", GKE_CLUSTER, "research", "RayCluster/ray-dev", 640, "divya.rao", "ml-research", "weekday", "business",
         "dev"),
        ("gke", GKE_CLUSTER, "serving", "Deployment/ranker", 430, "nina.costa", "serving", "mild", "flat", "prod"),
    ]  # fmt: skip
    out = []
    for account, cluster, namespace, workload, daily, owner, team, weekly, hourly, env in workloads:
        aws = account == "eks"
        out.append(
            Stream(
                ACCOUNTS[account],
                "Amazon Elastic Compute Cloud" if aws else "Compute Engine",
                "Compute",
                "USW2-EKS-EC2-vCPU-Hours" if aws else "A2 Instance Core running in Americas",
                float(daily),
                weekly,
                hourly,
                resource=f"k8s://{cluster}/{namespace}/{workload}",
                owner=f"{owner}@example.com",
                team=team,
                env=env,
                cluster=cluster,
                namespace=namespace,
                workload=workload.split("/")[1],
            )
        )
    return out


WEEKLY = {
    "flat": np.ones(7),
    "weekday": np.array([1.0, 1.04, 1.06, 1.03, 0.97, 0.42, 0.38]),
    "mild": np.array([1.0, 1.02, 1.03, 1.02, 0.98, 0.86, 0.84]),
}
HOURLY = {
    "flat": np.ones(24),
    "business": np.array(
        [
            0.35,
            0.3,
            0.28,
            0.28,
            0.3,
            0.38,
            0.6,
            0.9,
            1.3,
            1.6,
            1.75,
            1.8,
            1.7,
            1.75,
            1.8,
            1.7,
            1.5,
            1.25,
            0.95,
            0.75,
            0.6,
            0.5,
            0.42,
            0.38,
        ]
    ),
    "nightly": np.array(
        [
            0.6,
            2.6,
            3.2,
            3.0,
            2.4,
            1.0,
            0.4,
            0.3,
            0.3,
            0.3,
            0.3,
            0.3,
            0.3,
            0.3,
            0.3,
            0.3,
            0.3,
            0.3,
            0.3,
            0.3,
            0.3,
            0.3,
            0.3,
            0.4,
        ]
    ),
}
for _profile in HOURLY.values():
    _profile *= 24 / _profile.sum()


PLATFORM_SERVICE = {
    "bigquery": ("BigQuery", "Databases", "Analysis"),
    "athena": ("Amazon Athena", "Analytics", "DataScannedInTB"),
    "glue": ("AWS Glue", "Analytics", "ETL-DPU-Hour"),
    "emr": ("Amazon EMR", "Analytics", "ElasticMapReduce-Instance"),
    "dataproc": ("Dataproc", "Analytics", "Dataproc vCPU"),
    "sagemaker": ("Amazon SageMaker", "AI and Machine Learning", "Train:ml.gpu"),
    "vertex": ("Vertex AI", "AI and Machine Learning", "Custom Training GPU"),
}


def team_of(user: str) -> str:
    name = user.split("@", maxsplit=1)[0]
    return next((team for team, names in TEAMS.items() if name in names), "unknown")
