"""The runaway-job guard, measured: time from crossing a $500 cap to the cancel call, and the polling cost.

**Latency.** A local Google API server (``tests/doubles/google_guard.py``; the real
``google-cloud-bigquery`` client talks to it over HTTP) runs a BigQuery query whose processed bytes
grow with the wall clock, so it crosses the $500 per-job cap at a known moment — placed at a random
phase of the poll schedule in each run. Beside it run 20 queries that stay under the cap and one
*protected* query (``spendwatch-protect=true``) that is over it from the start. The guard runs as the
daemon runs it — an APScheduler ``IntervalTrigger`` job with ``max_instances=1, coalesce=True`` —
with a kill-switch rule in ``enforce``. Measured: from the crossing to the moment the ``jobs.cancel``
request reaches the server. The config's minimum interval is 15 s; the benchmark shortens it (1 s,
2 s) so many runs fit in minutes, and reports latency as a ratio of the interval.

**Polling cost.** 500 running jobs — 200 BigQuery queries (the same HTTP server), 150 Athena queries
in 3 workgroups among 2,100 finished ones, 100 SageMaker training jobs (both through botocore
``before-call`` responders, since moto lacks ``BatchGetQueryExecution`` and keeps no training job
InProgress), 50 EMR clusters (moto) — polled by the guard, counted per API for a first poll and a
steady-state poll, against the same jobs polled with the listers alone (``list_running``, what a
naive loop would do), then per hour at the default 60 s interval and against the documented quotas.

    python benchmarks/bench_guard.py [--runs 30] [--intervals 1 2] [--skip-cost]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Fake credentials: nothing here may reach a real cloud.
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        "NO_PROXY": "127.0.0.1,localhost",
    }
)

from spendwatch.clock import SystemClock
from spendwatch.collectors.aws.jobs import AwsJobsConfig
from spendwatch.collectors.gcp.jobs import GcpJobsConfig
from spendwatch.guard.config import GuardConfig
from spendwatch.guard.engine import run_guard_pass
from spendwatch.guard.ratelimit import DEFAULT_LIMITS, RateLimiter
from spendwatch.guard.state import WatchState
from spendwatch.killswitch.config import KillSwitchConfig
from spendwatch.store import Store
from tests.doubles.google import GoogleApiServer
from tests.doubles.google_guard import FakeRunningBigQuery, RunningQuery

TIB = 1 << 40
PROJECT = "analytics-warehouse"
CAP = 500.0
DOLLARS_PER_SECOND = 25.0  # the runaway: $25/s of on-demand bytes ($6.25/TiB → 4 TiB/s)


def _gcp_source(endpoint: str) -> GcpJobsConfig:
    return GcpJobsConfig.model_validate(
        {
            "name": "gcp-jobs",
            "type": "gcp-jobs",
            "projects": [PROJECT],
            "gcp": {"project": PROJECT, "anonymous": True, "endpoints": {"bigquery": endpoint}},
            "vertex": {"enabled": False},
            "dataproc": {"enabled": False},
            "retry": {"initial": "0.05s", "maximum": "0.2s", "deadline": "5s"},
        }
    )


def _guard(interval: float) -> GuardConfig:
    off = {"job_projected_cost": None, "user_daily_cost": None, "project_burn_rate": None}
    guard = GuardConfig.model_validate({"defaults": {"job_cost": CAP, **off}, "record_jobs": True})
    return guard.model_copy(update={"every": timedelta(seconds=interval)})  # below the 15 s config minimum


def _killswitch(endpoint: str) -> KillSwitchConfig:
    return KillSwitchConfig.model_validate(
        {
            "rules": [
                {
                    "name": "cancel-runaway-queries",
                    "when": {"incident": {"kinds": ["guard"]}},
                    "do": "cancel",
                    "resource_types": ["bigquery-job"],
                    "how": "enforce",
                    "allow_irreversible": True,
                }
            ],
            "caps": {"max_actions_per_run": 5, "max_actions_per_hour": 1000},
            "gcp": {"project": PROJECT, "anonymous": True, "endpoints": {"bigquery": endpoint}},
        }
    )


# -- latency -------------------------------------------------------------------------------------------


def one_run(server: GoogleApiServer, interval: float, rng: random.Random, folder: Path) -> tuple[float, int, float]:
    """(seconds from crossing to cancel, cancels of jobs that must not be cancelled, mean pass seconds)."""
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.interval import IntervalTrigger

    server.reset()
    fake = FakeRunningBigQuery(server, now=lambda: datetime.now(UTC))
    began = datetime.now(UTC)
    crossing = began + timedelta(seconds=2 * interval + rng.uniform(0, interval))
    start = crossing - timedelta(seconds=CAP / DOLLARS_PER_SECOND)
    per_second = DOLLARS_PER_SECOND / 6.25 * TIB
    fake.add(RunningQuery(PROJECT, "bquxjob_runaway", start=start, bytes_per_second=per_second))
    fake.add(
        RunningQuery(
            PROJECT, "bquxjob_protected", start=began - timedelta(minutes=5), bytes_per_second=per_second / 10,
            labels={"spendwatch-protect": "true"}, user_email="ops@example.com",
        )
    )  # fmt: skip
    for index in range(20):
        fake.add(
            RunningQuery(
                PROJECT, f"bquxjob_small_{index:02d}", start=began - timedelta(minutes=1),
                bytes_per_second=TIB / 6.25 / 100, user_email=f"user{index}@example.com",
            )
        )  # $0.01/s: $0.60 after a minute  # fmt: skip
    store = Store(folder / f"run-{time.monotonic_ns()}.duckdb")
    guard, source, killswitch = _guard(interval), _gcp_source(server.endpoint), _killswitch(server.endpoint)
    state = WatchState.new(guard)
    passes: list[float] = []

    def job() -> None:
        t = time.monotonic()
        run_guard_pass(guard, killswitch, [source], store, SystemClock(), clients={}, state=state)
        passes.append(time.monotonic() - t)

    scheduler = BackgroundScheduler(timezone=UTC, job_defaults={"max_instances": 1, "coalesce": True})
    scheduler.add_job(job, IntervalTrigger(seconds=interval), next_run_time=datetime.now(UTC))
    scheduler.start()
    deadline = time.monotonic() + (crossing - datetime.now(UTC)).total_seconds() + 3 * interval + 10
    try:
        while time.monotonic() < deadline and not any(c.job_id == "bquxjob_runaway" for c in fake.cancels):
            time.sleep(0.02)
        time.sleep(interval)  # one more poll: nothing else may be cancelled afterwards either
    finally:
        scheduler.shutdown(wait=True)
    cancel = next((c for c in fake.cancels if c.job_id == "bquxjob_runaway"), None)
    latency = float("inf") if cancel is None else cancel.wall - crossing.timestamp()
    wrong = sum(1 for c in fake.cancels if c.job_id != "bquxjob_runaway")
    return latency, wrong, statistics.fmean(passes) if passes else float("nan")


def latency(runs: int, intervals: list[float], seed: int) -> bool:
    rng = random.Random(seed)
    ok = True
    print(f"\nLatency: crossing a ${CAP:.0f} per-job cap → jobs.cancel received ({runs} runs per interval)")
    print(f"{'interval':>9} {'median':>8} {'p90':>8} {'max':>8} {'median/int':>11} {'max/int':>8} "
          f"{'pass (mean)':>12} {'wrong cancels':>14}  target")  # fmt: skip
    with GoogleApiServer() as server, tempfile.TemporaryDirectory() as folder:
        for interval in intervals:
            results = [one_run(server, interval, rng, Path(folder)) for _ in range(runs)]
            seconds = sorted(r[0] for r in results)
            wrong = sum(r[1] for r in results)
            passes = statistics.fmean(r[2] for r in results)
            median, worst = statistics.median(seconds), seconds[-1]
            p90 = seconds[min(len(seconds) - 1, int(0.9 * len(seconds)))]
            met = median < interval + 5 and worst <= 2 * interval and wrong == 0
            ok = ok and met
            print(
                f"{interval:>8.1f}s {median:>7.2f}s {p90:>7.2f}s {worst:>7.2f}s {median / interval:>11.2f} "
                f"{worst / interval:>8.2f} {passes:>11.2f}s {wrong:>14}  {'met' if met else 'MISSED'} "
                f"(median < {interval + 5:.0f} s, max <= {2 * interval:.0f} s, 0 wrong)"
            )
    return ok


# -- polling cost ----------------------------------------------------------------------------------------


class Responder:
    """Answers one AWS service's calls in-process (botocore ``before-call``), from a dict of handlers."""

    def __init__(self, handlers: dict[str, Any]) -> None:
        self.handlers = handlers

    def __call__(self, model: Any, context: dict[str, Any], **_: Any) -> Any:
        from botocore.awsrequest import AWSResponse

        handler = self.handlers.get(model.name)
        if handler is None:
            return None
        return AWSResponse(None, 200, {}, None), handler(context["bench_params"])


def _keep_params(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    context["bench_params"] = dict(params)  # the API parameters, for the responders at before-call


def athena_responder(now: datetime, workgroups: int = 3, running: int = 50, finished: int = 700) -> Responder:
    queries: dict[str, list[dict[str, Any]]] = {}
    for w in range(workgroups):
        # Newest first, 25 s apart; the newest ``running`` are still running (Athena's DML timeout is 30 min).
        queries[f"wg{w}"] = [
            {"id": f"wg{w}-q{i:05d}", "run": i < running, "age": i * 25} for i in range(running + finished)
        ]
    by_id = {q["id"]: q for items in queries.values() for q in items}

    def execution(q: dict[str, Any]) -> dict[str, Any]:
        submitted = now - timedelta(seconds=q["age"])
        status = {"State": "RUNNING" if q["run"] else "SUCCEEDED", "SubmissionDateTime": submitted}
        return {
            "QueryExecutionId": q["id"],
            "Query": "SELECT 1",
            "Status": status,
            "Statistics": {"DataScannedInBytes": 10**9},
            "WorkGroup": q["id"].split("-")[0],
        }

    def list_executions(params: dict[str, Any]) -> dict[str, Any]:
        items = queries[params["WorkGroup"]]
        offset = int(params.get("NextToken") or 0)
        page = items[offset : offset + 50]
        out: dict[str, Any] = {"QueryExecutionIds": [q["id"] for q in page]}
        if offset + 50 < len(items):
            out["NextToken"] = str(offset + 50)
        return out

    return Responder(
        {
            "ListWorkGroups": lambda p: {"WorkGroups": [{"Name": w, "State": "ENABLED"} for w in queries]},
            "GetWorkGroup": lambda p: {"WorkGroup": {"Name": p["WorkGroup"], "Configuration": {}}},
            "ListTagsForResource": lambda p: {"Tags": []},
            "ListQueryExecutions": list_executions,
            "BatchGetQueryExecution": lambda p: {
                "QueryExecutions": [execution(by_id[i]) for i in p["QueryExecutionIds"]],
                "UnprocessedQueryExecutionIds": [],
            },
        }
    )


def sagemaker_responder(now: datetime, jobs: int = 100) -> Responder:
    arn = "arn:aws:sagemaker:us-east-1:123456789012:training-job/"
    names = [f"train-{i:03d}" for i in range(jobs)]

    def listing(params: dict[str, Any]) -> dict[str, Any]:
        offset = int(params.get("NextToken") or 0)
        page = names[offset : offset + 100]
        out: dict[str, Any] = {
            "TrainingJobSummaries": [
                {
                    "TrainingJobName": n,
                    "TrainingJobArn": arn + n,
                    "CreationTime": now,
                    "TrainingJobStatus": "InProgress",
                }
                for n in page
            ]
        }
        if offset + 100 < len(names):
            out["NextToken"] = str(offset + 100)
        return out

    def describe(params: dict[str, Any]) -> dict[str, Any]:
        name = params["TrainingJobName"]
        return {
            "TrainingJobName": name,
            "TrainingJobArn": arn + name,
            "TrainingJobStatus": "InProgress",
            "ResourceConfig": {"InstanceType": "ml.g5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 50},
            "StoppingCondition": {"MaxRuntimeInSeconds": 86400},
            "CreationTime": now - timedelta(hours=1),
            "TrainingStartTime": now - timedelta(hours=1),
        }

    return Responder(
        {
            "ListTrainingJobs": listing,
            "DescribeTrainingJob": describe,
            "ListTags": lambda p: {"Tags": [{"Key": "owner", "Value": "ml@example.com"}]},
            "ListProcessingJobs": lambda p: {"ProcessingJobSummaries": []},
            "ListTransformJobs": lambda p: {"TransformJobSummaries": []},
        }
    )


def polling_cost(polls: int) -> dict[str, Counter[str]]:
    import boto3
    from moto.server import ThreadedMotoServer

    from spendwatch.collectors.aws.jobs import list_running as aws_list_running
    from spendwatch.collectors.base import SourceContext
    from spendwatch.collectors.gcp.jobs import list_running as gcp_list_running

    now = datetime.now(UTC)
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    counts: dict[str, Counter[str]] = {"guard first": Counter(), "guard steady": Counter(), "listers": Counter()}
    current: list[Counter[str]] = [Counter()]

    def count(model: Any, **_: Any) -> None:
        current[0][f"{model.service_model.service_name}:{model.name}"] += 1

    session = boto3.Session(region_name="us-east-1")
    session.events.register("before-parameter-build.*.*", _keep_params)
    session.events.register("before-call.*.*", count)  # first: counts, answers nothing
    session.events.register("before-call.athena.*", athena_responder(now))
    session.events.register("before-call.sagemaker.*", sagemaker_responder(now))
    session.events.register(
        "before-call.sts.GetCallerIdentity",
        lambda **_: (
            __import__("botocore.awsrequest").awsrequest.AWSResponse(None, 200, {}, None),
            {"Account": "123456789012"},
        ),
    )
    emr = session.client("emr", endpoint_url=endpoint)
    for i in range(50):
        group = {"Name": "m", "InstanceRole": "MASTER", "InstanceType": "m5.xlarge", "InstanceCount": 1}
        emr.run_job_flow(
            Name=f"etl-{i}",
            ReleaseLabel="emr-7.1.0",
            JobFlowRole="r",
            ServiceRole="r",
            Instances={"InstanceGroups": [group], "KeepJobFlowAliveWhenNoSteps": True},
        )
    aws = AwsJobsConfig.model_validate(
        {
            "name": "aws-jobs",
            "type": "aws-jobs",
            "aws": {"region": "us-east-1", "endpoint_url": endpoint},
            "glue": False,
            "batch": False,
        }
    )
    with GoogleApiServer() as server, tempfile.TemporaryDirectory() as folder:
        fake = FakeRunningBigQuery(server, now=lambda: datetime.now(UTC))
        for i in range(200):
            fake.add(
                RunningQuery(
                    PROJECT,
                    f"bquxjob_{i:03d}",
                    start=now - timedelta(minutes=5),
                    bytes_per_second=TIB / 10**6,
                    estimated_bytes=TIB,
                )
            )
        gcp = _gcp_source(server.endpoint)
        guard = GuardConfig()
        # Counting, not timing: the buckets count every call but do not sleep here (the latency run keeps them).
        state = WatchState.new(guard, RateLimiter(sleep=lambda seconds: None))
        store = Store(Path(folder) / "cost.duckdb")
        clients = {"aws-jobs": {"boto3_session": session}}
        for index in range(polls):
            current[0] = Counter()
            lists_before = fake.lists + fake.gets
            clock = _At(now + timedelta(minutes=index))
            run = run_guard_pass(guard, None, [aws, gcp], store, clock, clients=clients, state=state)
            current[0]["bigquery:jobs.list+get (HTTP)"] += fake.lists + fake.gets - lists_before
            assert len(run.estimates) == 500, (len(run.estimates), run.problems)
            counts["guard first" if index == 0 else "guard steady"] += current[0]
        current[0] = Counter()
        lists_before = fake.lists + fake.gets
        context = SourceContext(clock=_At(now), store=None, clients={"boto3_session": session})  # type: ignore[arg-type]
        aws_list_running(session, aws, now=now, context=context)
        gcp_list_running(gcp, clock=_At(now))
        current[0]["bigquery:jobs.list+get (HTTP)"] += fake.lists + fake.gets - lists_before
        counts["listers"] = current[0]
    moto.stop()
    steady = Counter({k: v / max(polls - 1, 1) for k, v in counts["guard steady"].items()})
    counts["guard steady"] = steady
    return counts


class _At:
    def __init__(self, moment: datetime) -> None:
        self._moment = moment

    def now(self) -> datetime:
        return self._moment


_DOCUMENTED = {
    "bigquery": ("100 requests/s per user per method", 100.0 * 3600),
    "emr": ("token bucket; the guide's example default refills 0.5/s", 0.5 * 3600),
}


def report_cost(counts: dict[str, Counter[str]]) -> None:
    print("\nPolling cost (guard/poll: average of the polls after the first, describe refreshes included):")
    print("500 running jobs (200 BigQuery, 150 Athena among 2,100 finished, 100 SageMaker, 50 EMR)")
    apis = sorted(set().union(*[set(c) for c in counts.values()]))
    print(f"{'API':40} {'listers/poll':>13} {'guard 1st':>10} {'guard/poll':>11} {'guard/h @60s':>13}  limit")
    total = dict.fromkeys(counts, 0.0)
    for api in apis:
        values = {k: counts[k].get(api, 0) for k in counts}
        for k in total:
            total[k] += values[k]
        per_hour = values["guard steady"] * 60
        service = api.split(":")[0]
        bucket = DEFAULT_LIMITS.get(_limit_key(api))
        documented, hourly = _DOCUMENTED.get(service, ("no fixed published figure", None))
        budget = f"guard bucket {bucket.rate:g}/s" if bucket else "guard bucket: per API"
        share = f", {per_hour / hourly:.3%} of it" if hourly else ""
        print(
            f"{api:40} {values['listers']:>13.0f} {values['guard first']:>10.0f} {values['guard steady']:>11.1f} "
            f"{per_hour:>13.0f}  {budget}; documented: {documented}{share}"
        )
    ratio = total["listers"] / total["guard steady"] if total["guard steady"] else float("inf")
    print(
        f"{'total':40} {total['listers']:>13.0f} {total['guard first']:>10.0f} {total['guard steady']:>11.1f} "
        f"{total['guard steady'] * 60:>13.0f}  listers/guard per poll = {ratio:.1f}x"
    )


def _limit_key(api: str) -> str:
    if api.startswith("bigquery"):
        return "bigquery:jobs.list"
    service, _, operation = api.partition(":")
    return f"{ {'elasticmapreduce': 'emr'}.get(service, service) }:{operation}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--intervals", type=float, nargs="+", default=[1.0, 2.0])
    parser.add_argument("--polls", type=int, default=4, help="polls for the cost measurement")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--skip-cost", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    args = parser.parse_args()
    ok = True
    if not args.skip_latency:
        ok = latency(args.runs, args.intervals, args.seed)
    if not args.skip_cost:
        report_cost(polling_cost(args.polls))
    return 0 if ok else 1


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    sys.exit(main())
