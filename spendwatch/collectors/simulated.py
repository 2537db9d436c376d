"""``simulated``: a realistic ML/data estate on AWS and GCP, for the demo and for tests.

Five AWS accounts and five GCP projects (one of each holds a Kubernetes cluster), 20+ services,
22 people in four teams, scheduled and ad-hoc
jobs (BigQuery and Athena queries, Glue, EMR, Dataproc, SageMaker and Vertex AI training), with weekly
and daily seasonality, growth, first-of-month fees, credits and taxes. On top of that, the incidents
spendwatch exists to catch (``SCENARIO``):

* ``runaway-query``: one analyst's BigQuery cross join scans ~1.3 PiB in three hours yesterday;
* ``forgotten-training``: a 2 × ml.p4d.24xlarge SageMaker training job left running for days;
* ``storage-leak``: a scratch S3 bucket that grows every day for three weeks;
* ``weekend-dip``: last weekend's usage fell far below normal — a drop, which must *not* alert;
* ``forgotten-gpu-job``: a 16-GPU Kubernetes Job on the EKS cluster ``eks-ml-train`` (its own account),
  left running for days; its cost lines carry the cluster, namespace and workload, as EKS split cost
  allocation gives them, and the running workload is a ``kubernetes`` job record with its owner.

Everything is a pure function of the seed and the end time, so tests can assert exact figures.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import Field

from spendwatch.collectors.base import SOURCES, Batch, CollectWindow, JobBatch, Source, SourceConfig
from spendwatch.collectors.estate import (
    ACCOUNTS,
    EKS_CLUSTER,
    HOURLY,
    PLATFORM_SERVICE,
    TEAMS,
    WEEKLY,
    Account,
    Incident,
    Stream,
    k8s_streams,
    streams,
    team_of,
)
from spendwatch.collectors.focus import split_by_month
from spendwatch.store.schema import COST_LINE_SCHEMA, JOB_SCHEMA, TAGS_TYPE, conform

AWS_PAYER = "100000000001"
GCP_BILLING = "01A2B3-C4D5E6-F7A8B9"
TIB = 1 << 40
BQ_PRICE_PER_TIB = 6.25
ATHENA_PRICE_PER_TB = 5.0


class SimulatedSourceConfig(SourceConfig):
    type: Literal["simulated"] = "simulated"
    seed: int = Field(default=7, description="same seed and end → same estate, to the cent")
    days: int = Field(default=120, ge=14, le=1100, description="days of history to generate")
    end: datetime | None = Field(default=None, description="the last hour generated (UTC); default: the current hour")
    incidents: bool = Field(default=True, description="inject the demo incidents")
    scale: float = Field(default=1.0, gt=0, description="multiplies every cost")


@SOURCES.register("simulated")
class SimulatedSource(Source):
    config_model: ClassVar[type[SourceConfig]] = SimulatedSourceConfig
    config: SimulatedSourceConfig

    def collect(self, window: CollectWindow) -> Iterator[Batch]:
        end = self.config.end or window.until
        estate = SimulatedEstate(self.config.seed, self.config.days, end, self.config.incidents, self.config.scale)
        self.context.progress(f"{self.name}: simulating {self.config.days} days of an ML/data estate")
        lines, jobs = estate.generate(self.context.checkpoint)
        yield from split_by_month(lines, label=self.name)
        yield JobBatch(jobs, label=f"{self.name} jobs")


class SimulatedEstate:
    """Generates cost lines and job records for ``days`` days up to the hour of ``end``."""

    def __init__(self, seed: int, days: int, end: datetime, incidents: bool = True, scale: float = 1.0) -> None:
        end = end.astimezone(UTC) if end.tzinfo else end.replace(tzinfo=UTC)
        # The newest complete hour: [end_hour, end_hour + 1h) is the last charge period.
        self.end_hour = end.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
        self.today = self.end_hour.replace(hour=0)
        self.start = self.today - timedelta(days=days - 1)
        self.hours = pd.date_range(self.start, self.end_hour, freq="h", tz=UTC)
        self.seed = seed
        self.incidents = incidents
        self.scale = scale
        self.rng = np.random.default_rng(seed)

    # -- the scenario ----------------------------------------------------------------------------

    @property
    def scenario(self) -> list[Incident]:
        """The injected incidents, placed relative to the end of the data."""
        yesterday = self.today - timedelta(days=1)
        weekend = self._last_full_weekend()
        return [
            Incident(
                "runaway-query",
                "a runaway BigQuery cross join",
                "gcp",
                "analytics-warehouse",
                "BigQuery",
                "dana.kim@example.com",
                "bquxjob_7f3a2c91_runaway",
                yesterday + timedelta(hours=14),
                yesterday + timedelta(hours=17),
                True,
            ),
            Incident(
                "forgotten-training",
                "a forgotten multi-GPU SageMaker training job",
                "aws",
                "210987654321",
                "Amazon SageMaker",
                "ben.okafor@example.com",
                "llm-finetune-ben-0412",
                self.today - timedelta(days=3, hours=-9),
                None,
                True,
            ),
            Incident(
                "storage-leak",
                "a scratch S3 bucket growing every day",
                "aws",
                "345678901234",
                "Amazon Simple Storage Service",
                "omar.haddad@example.com",
                "arn:aws:s3:::dp-tmp-shuffle",
                self.today - timedelta(days=21),
                None,
                True,
            ),
            Incident(
                "weekend-dip",
                "last weekend's quiet usage (a drop, not an anomaly)",
                "aws",
                "456789012345",
                "Amazon Elastic Compute Cloud",
                None,
                None,
                weekend,
                weekend + timedelta(days=2),
                False,
            ),
            Incident(
                "forgotten-gpu-job",
                "a forgotten 16-GPU Kubernetes Job on EKS",
                "aws",
                ACCOUNTS["eks"].account_id,
                "Amazon Elastic Compute Cloud",
                "fatima.zahra@example.com",
                "llm-pretrain-fatima",
                self.today - timedelta(days=2, hours=-7),
                None,
                True,
            ),
        ]

    def _last_full_weekend(self) -> datetime:
        day = self.today - timedelta(days=1)
        while day.weekday() != 6:  # the last Sunday fully in the data
            day -= timedelta(days=1)
        return day - timedelta(days=1)

    # -- generation ------------------------------------------------------------------------------

    def generate(self, checkpoint: Callable[[], None] = lambda: None) -> tuple[pa.Table, pa.Table]:
        """``checkpoint`` runs between streams: a stopping daemon gives up there (nothing is written yet)."""
        jobs = self._jobs()
        frames = []
        for stream in streams():
            checkpoint()
            frames.append(self._background(stream))
        frames.append(self._job_costs(jobs[jobs["platform"] != "kubernetes"]))
        frames.append(self._charges())
        # The clusters come last: the streams before them draw the same random numbers as without them.
        for stream in k8s_streams():
            checkpoint()
            frames.append(self._background(stream))
        if self.incidents:
            frames.append(self._gpu_job_costs())
        lines = pd.concat(frames, ignore_index=True)
        lines = lines[lines["billed_cost"] != 0].sort_values("charge_period_start", kind="stable")
        return _cost_table(lines), _job_table(jobs)

    def _shape(self, stream: Stream) -> np.ndarray:
        hours = self.hours
        days = np.asarray((hours - self.start).days)
        weekly = WEEKLY[stream.weekly][np.asarray(hours.day_of_week)]
        hourly = HOURLY[stream.hourly][np.asarray(hours.hour)]
        growth = (1 + stream.growth) ** days
        noise = np.exp(self.rng.normal(0, stream.noise, len(hours)))
        daily_noise = np.exp(self.rng.normal(0, stream.noise / 2, days.max() + 1))[days]
        shape: np.ndarray = stream.daily / 24 * weekly * hourly * growth * noise * daily_noise
        return shape

    def _background(self, stream: Stream) -> pd.DataFrame:
        cost = self._shape(stream) * self.scale
        if self.incidents:
            cost = self._inject(stream, cost)
        return self._lines(
            stream.account,
            stream.service,
            stream.category,
            stream.sku,
            cost,
            resource=stream.resource,
            owner=stream.owner,
            team=stream.team,
            env=stream.env,
            k8s=(stream.cluster, stream.namespace, stream.workload) if stream.cluster else None,
        )

    def _inject(self, stream: Stream, cost: np.ndarray) -> np.ndarray:
        hours = self.hours
        if stream.resource == "arn:aws:s3:::dp-tmp-shuffle":
            leak_start = self.today - timedelta(days=21)
            grown = np.clip(np.asarray((hours - leak_start) / pd.Timedelta(days=1)), 0, None)
            cost = cost + grown * 14.0 / 24 * self.scale  # +$14/day more every day
        if stream.account.name == "prod-serving" and stream.service == "Amazon Elastic Compute Cloud":
            weekend = self._last_full_weekend()
            dip = (hours >= pd.Timestamp(weekend)) & (hours < pd.Timestamp(weekend + timedelta(days=2)))
            cost = np.where(dip, cost * 0.35, cost)
        return cost

    def _lines(
        self,
        account: Account,
        service: str,
        category: str,
        sku: str,
        cost: np.ndarray,
        *,
        hours: pd.DatetimeIndex | None = None,
        resource: str | None = None,
        owner: str | None = None,
        team: str | None = None,
        env: str = "prod",
        job: str | None = None,
        charge_category: str = "Usage",
        frequency: str = "Usage-Based",
        description: str | None = None,
        k8s: tuple[str | None, str | None, str | None] | None = None,
    ) -> pd.DataFrame:
        starts = self.hours if hours is None else hours
        tags = {k: v for k, v in (("owner", owner), ("team", team), ("env", env), ("job", job)) if v}
        if k8s is not None:  # the workload's labels, as EKS/GKE cost allocation carries them
            tags.update({f"k8s-label/{k}": v for k, v in (("owner", owner), ("team", team)) if v})
        billed = np.round(cost, 6)
        # FOCUS columns a real bill carries: the calendar-month billing period, who invoices, and (for
        # hourly usage) an hour of the SKU as the priced quantity.
        month = starts.tz_convert("UTC").tz_localize(None).to_period("M")
        hourly = frequency == "Usage-Based" and charge_category == "Usage"
        return pd.DataFrame(
            {
                "provider": account.provider,
                "billing_account_id": AWS_PAYER if account.provider == "aws" else GCP_BILLING,
                "sub_account_id": account.account_id,
                "sub_account_name": account.name,
                "service_name": service,
                "service_category": category,
                "sku_id": sku,
                "region_id": account.region,
                "resource_id": resource,
                "resource_name": (resource or "").rsplit(":", 1)[-1].rsplit("/", 1)[-1] or None,
                "charge_category": charge_category,
                "charge_frequency": frequency,
                "charge_description": description or f"{service} {sku}",
                "charge_period_start": starts,
                "charge_period_end": starts + pd.Timedelta(hours=1),
                "billed_cost": billed,
                "effective_cost": billed,
                "list_cost": billed,
                "billing_currency": "USD",
                "tags": [list(tags.items())] * len(starts),
                "owner": owner,
                "job_id": job,
                "k8s_cluster": k8s[0] if k8s else None,
                "k8s_namespace": k8s[1] if k8s else None,
                "k8s_workload": k8s[2] if k8s else None,
                "billing_account_name": "Example Corp (payer)" if account.provider == "aws" else "Example Corp",
                "billing_period_start": month.to_timestamp().tz_localize("UTC"),
                "billing_period_end": (month + 1).to_timestamp().tz_localize("UTC"),
                "pricing_quantity": 1.0 if hourly else None,
                "pricing_unit": "Hours" if hourly else None,
                "contracted_cost": billed,
                "invoice_issuer_name": ISSUERS[account.provider],
                "publisher_name": ISSUERS[account.provider],
            }
        )

    # -- jobs ------------------------------------------------------------------------------------

    def _jobs(self) -> pd.DataFrame:
        frames = [
            self._queries("bigquery", ACCOUNTS["gwh"], TEAMS["analytics"] + TEAMS["data-platform"][:2], 9),
            self._queries("athena", ACCOUNTS["sandbox"], TEAMS["analytics"][:5], 6),
            self._scheduled("glue", ACCOUNTS["dp"], "etl-orders-nightly", "quinn.reilly", 2, 5, "G.2X", 20, 0.44),
            self._scheduled("emr", ACCOUNTS["dp"], "emr-sessionize", "sam.taylor", 1, 3, "m6g.4xlarge", 12, 0.77),
            self._scheduled(
                "dataproc", ACCOUNTS["glake"], "dataproc-dedupe-events", "rosa.mendes", 3, 2, "n2-standard-16", 8, 0.78
            ),
            self._trainings(),
        ]
        if self.incidents:
            frames.append(self._incident_jobs())
        jobs = pd.concat(frames, ignore_index=True)
        return jobs[jobs["start_time"] <= self.end_hour + timedelta(hours=1)].reset_index(drop=True)

    def _job_rows(self, rows: list[dict[str, Any]]) -> pd.DataFrame:
        frame = pd.DataFrame(rows)
        frame["start_time"] = pd.to_datetime(frame["start_time"], utc=True)
        frame["end_time"] = pd.to_datetime(frame["end_time"], utc=True)
        return frame

    def _queries(self, platform: str, account: Account, users: list[str], per_day: int) -> pd.DataFrame:
        rng = np.random.default_rng([self.seed, 11, len(platform)])
        days = pd.date_range(self.start, self.today, freq="D", tz=UTC)
        rows: list[dict[str, Any]] = []
        tables = ["events", "orders", "sessions", "ad_impressions", "users", "payments"]
        for day in days:
            weekend = day.weekday() >= 5
            for user in users:
                for _ in range(rng.poisson(per_day * (0.15 if weekend else 1.0))):
                    start = day + timedelta(hours=float(rng.uniform(7, 19)))
                    tib = float(rng.lognormal(-1.6, 1.0))
                    seconds = 5 + tib * 40
                    table = tables[int(rng.integers(len(tables)))]
                    text = f"SELECT country, count(*) FROM analytics.{table} WHERE dt >= '{day:%Y-%m-%d}' GROUP BY 1"
                    rows.append(self._query_row(platform, account, user, start, seconds, tib, text, rng))
        return self._job_rows(rows)

    def _query_row(
        self,
        platform: str,
        account: Account,
        user: str,
        start: datetime,
        seconds: float,
        tib: float,
        text: str,
        rng: np.random.Generator,
    ) -> dict[str, Any]:
        bytes_billed = int(tib * TIB)
        if platform == "bigquery":
            job_id = f"bquxjob_{rng.integers(1 << 31):08x}_{int(start.timestamp()):x}"
            cost = tib * BQ_PRICE_PER_TIB
            method = f"bytes_billed x ${BQ_PRICE_PER_TIB}/TiB (on-demand)"
            owner_source = "job.user_email"
        else:
            job_id = f"{rng.integers(1 << 62):016x}-athena"
            cost = max(bytes_billed, 10 << 20) / 1e12 * ATHENA_PRICE_PER_TB
            method = f"data scanned x ${ATHENA_PRICE_PER_TB}/TB (10 MB minimum)"
            owner_source = "cloudtrail"
        return {
            "platform": platform,
            "job_id": job_id,
            "provider": account.provider,
            "sub_account_id": account.account_id,
            "region_id": account.region,
            "name": None,
            "user": f"{user}@example.com",
            "owner": f"{user}@example.com",
            "owner_source": owner_source,
            "state": "DONE" if platform == "bigquery" else "SUCCEEDED",
            "start_time": start,
            "end_time": start + timedelta(seconds=seconds),
            "query_text": text,
            "query_hash": hashlib.sha256(text.encode()).hexdigest()[:16],
            "bytes_processed": bytes_billed,
            "bytes_billed": bytes_billed,
            "estimated_cost": round(cost, 4),
            "cost_method": method,
            "resource_id": job_id,
            "labels": [("team", team_of(user))],
        }

    def _scheduled(
        self,
        platform: str,
        account: Account,
        name: str,
        user: str,
        hour: int,
        hours: float,
        instance: str,
        count: int,
        price: float,
    ) -> pd.DataFrame:
        rng = np.random.default_rng([self.seed, 23, len(name)])
        rows: list[dict[str, Any]] = []
        for day in pd.date_range(self.start, self.today, freq="D", tz=UTC):
            start = day + timedelta(hours=hour, minutes=float(rng.uniform(0, 10)))
            seconds = hours * 3600 * float(rng.uniform(0.9, 1.15))
            run = f"{name}-{day:%Y%m%d}"
            rows.append(_compute_job(platform, account, run, name, user, start, seconds, instance, count, price))
        return self._job_rows(rows)

    def _trainings(self) -> pd.DataFrame:
        rng = np.random.default_rng([self.seed, 31])
        rows: list[dict[str, Any]] = []
        trainers = [
            ("sagemaker", ACCOUNTS["ml"], "ml.g5.12xlarge", 7.09),
            ("vertex", ACCOUNTS["gtrain"], "a2-highgpu-1g", 3.67),
        ]
        for week in pd.date_range(self.start, self.today, freq="W-TUE", tz=UTC):
            for platform, account, instance, price in trainers:
                user = TEAMS["ml-research"][int(rng.integers(6))]
                start = week + timedelta(hours=10)
                seconds = float(rng.uniform(5, 9)) * 3600
                count = 2
                name = f"train-{user.split('.')[0]}-{week:%m%d}"
                row = _compute_job(platform, account, name, name, user, start, seconds, instance, count, price)
                rows.append({**row, "max_runtime_seconds": 86400})
        return self._job_rows(rows)

    def _incident_jobs(self) -> pd.DataFrame:
        runaway, training = self.scenario[0], self.scenario[1]
        text = (
            "SELECT e.*, s.* FROM analytics.events e JOIN analytics.sessions s ON TRUE "
            "WHERE e.dt >= '2023-01-01'  -- missing join key"
        )
        tib = 1344.0
        rng = np.random.default_rng([self.seed, 97])
        query = self._query_row("bigquery", ACCOUNTS["gwh"], "dana.kim", runaway.start, 3 * 3600 - 60, tib, text, rng)
        query["job_id"] = runaway.culprit_job
        query["resource_id"] = runaway.culprit_job
        running_hours = (self.end_hour + timedelta(hours=1) - training.start) / timedelta(hours=1)
        price, count = 37.688, 2
        training_row = {
            "platform": "sagemaker",
            "job_id": training.culprit_job,
            "provider": "aws",
            "sub_account_id": training.sub_account_id,
            "region_id": "us-east-1",
            "name": training.culprit_job,
            "user": training.culprit_user,
            "owner": training.culprit_user,
            "owner_source": "tag:owner",
            "state": "RUNNING",
            "start_time": training.start,
            "end_time": None,
            "instance_type": "ml.p4d.24xlarge",
            "instance_count": count,
            "max_runtime_seconds": 14 * 86400,
            "estimated_cost": round(price * count * running_hours, 2),
            "projected_cost": round(price * count * 14 * 24, 2),
            "cost_method": f"{count} x ml.p4d.24xlarge x elapsed at ${price}/h",
            "resource_id": f"arn:aws:sagemaker:us-east-1:210987654321:training-job/{training.culprit_job}",
            "labels": [("owner", training.culprit_user), ("team", "ml-research")],
        }
        return self._job_rows([query, training_row, self._gpu_job_row()])

    # The forgotten Kubernetes Job: 16 GPUs on two p4d.24xlarge nodes of the EKS cluster.
    GPU_JOB_NODES = 2
    GPU_JOB_NODE_PRICE = 32.7726

    def _gpu_job_row(self) -> dict[str, Any]:
        incident = self.scenario[4]
        owner = incident.culprit_user
        name = incident.culprit_job
        uri = f"k8s://{EKS_CLUSTER}/research/Job/{name}"
        hours = (self.end_hour + timedelta(hours=1) - incident.start) / timedelta(hours=1)
        rate = self.GPU_JOB_NODES * self.GPU_JOB_NODE_PRICE
        return {
            "platform": "kubernetes",
            "job_id": uri,
            "provider": "aws",
            "sub_account_id": incident.sub_account_id,
            "region_id": ACCOUNTS["eks"].region,
            "name": name,
            "user": owner,
            "owner": owner,
            "owner_source": "label:owner",
            "state": "RUNNING",
            "start_time": incident.start,
            "end_time": None,
            "instance_type": "p4d.24xlarge",
            "instance_count": self.GPU_JOB_NODES,
            "estimated_cost": round(rate * hours * self.scale, 2),
            "cost_method": f"16 of 16 GPUs requested on {self.GPU_JOB_NODES} x p4d.24xlarge at "
            f"${self.GPU_JOB_NODE_PRICE}/h (node price shared by requests)",
            "resource_id": uri,
            "labels": [
                ("owner", owner),
                ("team", "ml-research"),
                ("k8s:cluster", EKS_CLUSTER),
                ("k8s:namespace", "research"),
                ("k8s:kind", "Job"),
                ("k8s:gpus", "16"),
            ],
        }

    def _gpu_job_costs(self) -> pd.DataFrame:
        incident = self.scenario[4]
        running = self.hours[self.hours >= pd.Timestamp(incident.start)]
        cost = np.full(len(running), self.GPU_JOB_NODES * self.GPU_JOB_NODE_PRICE * self.scale)
        return self._lines(
            ACCOUNTS["eks"],
            "Amazon Elastic Compute Cloud",
            "Compute",
            "USW2-EKS-EC2-GPU-Hours",
            cost,
            hours=running,
            resource=f"k8s://{EKS_CLUSTER}/research/Job/{incident.culprit_job}",
            owner=incident.culprit_user,
            team="ml-research",
            env="dev",
            job=incident.culprit_job,
            k8s=(EKS_CLUSTER, "research", incident.culprit_job),
        )

    def _job_costs(self, jobs: pd.DataFrame) -> pd.DataFrame:
        """Cost lines the jobs cause, spread over the hours they ran (as the bills show them)."""
        first_hour = pd.Timestamp(self.hours[0])
        open_end = pd.Timestamp(self.end_hour) + pd.Timedelta(hours=1)
        ends = jobs["end_time"].fillna(open_end)
        first = ((jobs["start_time"] - first_hour) // pd.Timedelta(hours=1)).to_numpy(dtype=np.int64)
        last = ((ends - pd.Timedelta(microseconds=1) - first_hour) // pd.Timedelta(hours=1)).to_numpy(dtype=np.int64)
        last = np.maximum(last, first)
        spans = last - first + 1
        index = np.repeat(np.arange(len(jobs)), spans)
        offsets = np.arange(len(index)) - np.repeat(np.cumsum(spans) - spans, spans)
        hour_index = np.repeat(first, spans) + offsets
        running = (jobs["state"] == "RUNNING").to_numpy()
        per_hour = np.where(running, 37.688 * 2, jobs["estimated_cost"].to_numpy(dtype=float) / spans)
        exploded = jobs.iloc[index].reset_index(drop=True)
        exploded["hour"] = hour_index
        exploded["cost"] = per_hour[index] * self.scale
        exploded = exploded[(exploded["hour"] >= 0) & (exploded["hour"] < len(self.hours))]
        tagged = ~exploded["platform"].isin(["bigquery", "athena"])  # query costs carry no owner in the bill
        exploded["resource"] = exploded["resource_id"].where(tagged, None)
        exploded["line_owner"] = exploded["owner"].where(tagged, None)
        exploded["line_job"] = exploded["job_id"].where(tagged, None)
        keys = ["platform", "sub_account_id", "hour", "resource", "line_owner", "line_job"]
        grouped = exploded.groupby(keys, dropna=False, sort=False, as_index=False)["cost"].sum()
        frames = []
        groups = grouped.groupby(["platform", "sub_account_id", "resource", "line_owner", "line_job"], dropna=False)
        for key, part in groups:
            platform, account_id, resource, owner, job = (_text(v) for v in key)
            service, category, sku = PLATFORM_SERVICE[str(platform)]
            account = next(a for a in ACCOUNTS.values() if a.account_id == account_id)
            team = team_of(owner.split("@")[0]) if owner else None
            frames.append(
                self._lines(
                    account,
                    service,
                    category,
                    sku,
                    part["cost"].to_numpy(),
                    hours=self.hours[part["hour"].to_numpy()],
                    resource=resource,
                    owner=owner,
                    team=team,
                    job=job,
                    env="dev",
                )
            )
        return pd.concat(frames, ignore_index=True)

    def _charges(self) -> pd.DataFrame:
        """First-of-month fees, daily savings-plan fees, monthly credits and taxes: reported, not scored."""
        frames = []
        month_starts = pd.date_range(self.start, self.end_hour, freq="MS", tz=UTC)
        if self.start.day == 1:
            month_starts = month_starts.union(pd.DatetimeIndex([self.start]))
        support = ACCOUNTS["prod"]
        for month in month_starts:
            hour = pd.DatetimeIndex([month])
            frames.append(
                self._lines(
                    support,
                    "AWS Support (Business)",
                    "Management and Governance",
                    "Support",
                    np.array([4200.0 * self.scale]),
                    hours=hour,
                    charge_category="Purchase",
                    frequency="Recurring",
                    description="AWS Support (Business) monthly fee",
                )
            )
            frames.append(
                self._lines(
                    ACCOUNTS["gwh"],
                    "BigQuery",
                    "Databases",
                    "Flat-rate commitment credit",
                    np.array([-900.0 * self.scale]),
                    hours=hour,
                    charge_category="Credit",
                    frequency="One-Time",
                    description="Promotional credit",
                )
            )
            frames.append(
                self._lines(
                    ACCOUNTS["gtrain"],
                    "Compute Engine",
                    "Compute",
                    "Tax",
                    np.array([610.0 * self.scale]),
                    hours=hour,
                    charge_category="Tax",
                    frequency="Recurring",
                    description="Sales tax",
                )
            )
        days = pd.date_range(self.start, self.today, freq="D", tz=UTC)
        frames.append(
            self._lines(
                ACCOUNTS["prod"],
                "Savings Plans for AWS Compute usage",
                "Compute",
                "ComputeSP:1yrNoUpfront",
                np.full(len(days), 480.0 * self.scale),
                hours=days,
                charge_category="Purchase",
                frequency="Recurring",
                description="Savings Plan recurring fee",
            )
        )
        return pd.concat(frames, ignore_index=True)


def _compute_job(
    platform: str,
    account: Account,
    job_id: str,
    name: str,
    user: str,
    start: datetime,
    seconds: float,
    instance: str,
    count: int,
    price: float,
) -> dict[str, Any]:
    """A finished, tagged compute job (ETL run, cluster, training) priced as count x instance x elapsed."""
    return {
        "platform": platform,
        "job_id": job_id,
        "provider": account.provider,
        "sub_account_id": account.account_id,
        "region_id": account.region,
        "name": name,
        "user": f"{user}@example.com",
        "owner": f"{user}@example.com",
        "owner_source": "tag:owner",
        "state": "SUCCEEDED",
        "start_time": start,
        "end_time": start + timedelta(seconds=seconds),
        "instance_type": instance,
        "instance_count": count,
        "estimated_cost": round(price * count * seconds / 3600, 4),
        "cost_method": f"{count} x {instance} x elapsed at ${price}/h",
        "resource_id": job_id,
        "labels": [("owner", f"{user}@example.com"), ("job", name)],
    }


ISSUERS = {"aws": "Amazon Web Services, Inc.", "gcp": "Google LLC"}


def _text(value: object) -> str | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _cost_table(lines: pd.DataFrame) -> pa.Table:
    table = pa.Table.from_pandas(lines.drop(columns=["tags"]), preserve_index=False)
    table = table.append_column("tags", pa.array(lines["tags"].tolist(), type=TAGS_TYPE))
    return conform(table, COST_LINE_SCHEMA)


def _job_table(jobs: pd.DataFrame) -> pa.Table:
    jobs = jobs.copy()
    jobs["billing_currency"] = "USD"
    labels = pa.array(jobs.pop("labels").tolist(), type=TAGS_TYPE)
    for column in ("instance_count", "max_runtime_seconds", "bytes_processed", "bytes_billed"):
        if column in jobs:
            jobs[column] = jobs[column].astype("Int64")
    table = pa.Table.from_pandas(jobs, preserve_index=False).append_column("labels", labels)
    return conform(table, JOB_SCHEMA)
