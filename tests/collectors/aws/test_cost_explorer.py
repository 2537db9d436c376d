"""aws-cost-explorer against moto on 127.0.0.1 (Stubber where moto lacks an API)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import Stubber

from spendwatch.collect import collect_source
from spendwatch.collectors.aws.cost_explorer import CostExplorerConfig, plan_chunks, requests_today
from spendwatch.config import parse_config
from spendwatch.errors import ConfigError
from spendwatch.store import Store
from tests.doubles.aws_calls import CallLog
from tests.doubles.aws_ce import ce_page
from tests.doubles.clock import FixedClock

ACCOUNTS = {"111111111111": "data-platform", "222222222222": "ml-research"}


def config(moto: Any, **extra: Any) -> CostExplorerConfig:
    values: dict[str, Any] = {
        "name": "ce",
        "type": "aws-cost-explorer",
        "backfill": "3d",
        "aws": {"region": "us-east-1", "endpoint_url": moto.endpoint_url if moto else None},
        **extra,
    }
    return CostExplorerConfig.model_validate(values)


def totals(store: Store, source: str = "ce") -> dict[tuple[str, str], float]:
    rows = store.query(
        "SELECT coalesce(sub_account_id, '-'), charge_category, round(sum(billed_cost), 6) FROM cost_lines "
        "WHERE source = ? GROUP BY ALL",
        [source],
    )
    return {(a, c): v for a, c, v in rows}


def test_daily_usage_and_charges_are_separated_and_paged(
    moto_server: Any, store: Store, clock: FixedClock, clients: dict[str, Any], call_log: CallLog
) -> None:
    usage_1 = ce_page(
        [
            ("2026-11-17", "2026-11-18", [(["111111111111", "Amazon Simple Storage Service"], 10.0, 9.5)], False),
            (
                "2026-11-18",
                "2026-11-19",
                [(["111111111111", "Amazon Elastic Compute Cloud - Compute"], 20.0, 18)],
                False,
            ),
        ],
        token="page-2",
        accounts=ACCOUNTS,
    )
    usage_2 = ce_page(
        [
            ("2026-11-19", "2026-11-20", [(["222222222222", "Amazon SageMaker"], 30.0, 30.0)], False),
            ("2026-11-20", "2026-11-21", [(["222222222222", "Amazon SageMaker"], 5.0, 5.0)], True),
        ],
        accounts=ACCOUNTS,
    )
    charges = ce_page(
        [
            (
                "2026-11-17",
                "2026-11-18",
                [(["111111111111", "Tax"], 1.5, 1.5), (["111111111111", "Credit"], -4, -4)],
                False,
            ),
            ("2026-11-18", "2026-11-19", [(["222222222222", "Recurring reservation fee"], 7.0, 0.0)], False),
        ]
    )
    moto_server.seed_cost_explorer([usage_1, usage_2, charges])

    run = collect_source(config(moto_server), store, clock, clients=clients)

    assert run.ok, run.error or run.problems
    assert totals(store) == {
        ("111111111111", "Usage"): 30.0,
        ("222222222222", "Usage"): 35.0,
        ("111111111111", "Tax"): 1.5,
        ("111111111111", "Credit"): -4.0,
        ("222222222222", "Purchase"): 7.0,
    }
    names = dict(
        store.query(
            "SELECT DISTINCT sub_account_id, sub_account_name FROM cost_lines WHERE sub_account_name IS NOT NULL"
        )
    )
    assert names == ACCOUNTS
    estimated = store.query(
        "SELECT charge_period_start, is_estimated FROM cost_lines WHERE service_name = 'Amazon SageMaker' ORDER BY 1"
    )
    assert [e for _, e in estimated] == [False, True]
    fee = store.query("SELECT charge_frequency, effective_cost FROM cost_lines WHERE charge_category = 'Purchase'")
    assert fee == [("Recurring", 0.0)]
    assert store.query(
        "SELECT DISTINCT service_category FROM cost_lines WHERE service_name LIKE 'Amazon SageMaker'"
    ) == [("AI and Machine Learning",)]

    requests = call_log.operations("ce", "GetCostAndUsage")
    assert len(requests) == 3 and run.counters["aws_ce_requests"] == 3
    assert requests_today(store, "ce", clock.now()) == 3
    assert requests[1]["NextPageToken"] == "page-2"
    assert requests[0]["Filter"] == {
        "Dimensions": {"Key": "RECORD_TYPE", "Values": ["Usage", "DiscountedUsage", "Savings Plan Covered Usage"]}
    }
    assert requests[2]["Filter"] == {"Not": requests[0]["Filter"]}
    assert [g["Key"] for g in requests[2]["GroupBy"]] == ["LINKED_ACCOUNT", "RECORD_TYPE"]
    assert requests[0]["TimePeriod"] == {"Start": "2026-11-17", "End": "2026-11-21"}


def test_restatement_window_is_refetched_and_replaced(
    moto_server: Any, store: Store, clock: FixedClock, clients: dict[str, Any], call_log: CallLog
) -> None:
    first = ce_page(
        [
            (f"2026-11-{d}", f"2026-11-{d + 1}", [(["111111111111", "AWS Glue"], 10.0, 10.0)], False)
            for d in range(17, 21)
        ]
    )
    moto_server.seed_cost_explorer([first, ce_page([])])
    assert collect_source(config(moto_server), store, clock, clients=clients).ok
    assert totals(store)[("111111111111", "Usage")] == 40.0

    clock.set(datetime(2026, 11, 21, 9, 0, tzinfo=UTC))
    restated = ce_page(
        [
            (f"2026-11-{d}", f"2026-11-{d + 1}", [(["111111111111", "AWS Glue"], 12.0, 12.0)], False)
            for d in range(18, 22)
        ]
    )
    moto_server.seed_cost_explorer([restated, ce_page([])])
    run = collect_source(config(moto_server), store, clock, clients=clients)

    assert run.ok, run.error or run.problems
    # 17th kept from the first run (outside the 3-day window); 18th..21st replaced, never doubled.
    assert totals(store)[("111111111111", "Usage")] == 10.0 + 4 * 12.0
    second = call_log.operations("ce", "GetCostAndUsage")[-2]
    assert second["TimePeriod"] == {"Start": "2026-11-18", "End": "2026-11-22"}


def test_hourly_tail_is_stored_hourly_and_older_days_daily(
    moto_server: Any, store: Store, clock: FixedClock, clients: dict[str, Any], call_log: CallLog
) -> None:
    daily = ce_page([("2026-11-17", "2026-11-18", [(["111111111111", "Amazon EC2"], 24.0, 24.0)], False)])
    hourly = ce_page(
        [
            (
                f"2026-11-19T{h:02d}:00:00Z",
                f"2026-11-19T{h + 1:02d}:00:00Z",
                [(["111111111111", "Amazon EC2"], 1.0, 1.0)],
                True,
            )
            for h in range(3)
        ]
    )
    moto_server.seed_cost_explorer([daily, ce_page([]), hourly, ce_page([])])

    run = collect_source(config(moto_server, hourly=True, hourly_days=2), store, clock, clients=clients)

    assert run.ok, run.error or run.problems
    granularities = [p["Granularity"] for p in call_log.operations("ce", "GetCostAndUsage")]
    assert granularities == ["DAILY", "DAILY", "HOURLY", "HOURLY"]
    hourly_request = call_log.operations("ce", "GetCostAndUsage")[2]
    assert hourly_request["TimePeriod"] == {"Start": "2026-11-19T00:00:00Z", "End": "2026-11-21T00:00:00Z"}
    spans = store.query(
        "SELECT DISTINCT date_diff('hour', charge_period_start, charge_period_end) FROM cost_lines ORDER BY 1"
    )
    assert spans == [(1,), (24,)]
    loads = store.query("SELECT period_start, period_end FROM loads ORDER BY 1")
    assert loads[0][1] == loads[1][0]  # daily and hourly batches meet without overlapping


def test_three_group_bys_are_refused_before_any_request(tmp_path: Path) -> None:
    text = """
sources:
  - name: ce
    type: aws-cost-explorer
    group_by: [LINKED_ACCOUNT, SERVICE, REGION]
"""
    with pytest.raises(ConfigError, match=r"sources\[0\]\.group_by.*at most 2 group-by keys"):
        parse_config(text, tmp_path / "c.yaml", environ={})


@pytest.mark.parametrize(
    ("key", "message"),
    [("FLAVOUR", "not a Cost Explorer dimension"), ("TAG:", "needs a key")],
)
def test_bad_group_by_keys_are_refused(key: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CostExplorerConfig.model_validate({"name": "ce", "group_by": ["LINKED_ACCOUNT", key]})


def test_split_by_must_not_repeat_a_group_by() -> None:
    with pytest.raises(ValueError, match="already in group_by"):
        CostExplorerConfig.model_validate({"name": "ce", "split_by": "SERVICE"})


def test_daily_request_budget_stops_the_run_and_keeps_what_was_committed(
    moto_server: Any, store: Store, clock: FixedClock, clients: dict[str, Any], call_log: CallLog
) -> None:
    clock.set(datetime(2026, 11, 2, 9, 0, tzinfo=UTC))
    october = ce_page([("2026-10-30", "2026-10-31", [(["111111111111", "Amazon S3"], 3.0, 3.0)], False)])
    moto_server.seed_cost_explorer([october, ce_page([])])

    run = collect_source(config(moto_server, max_requests_per_day=3), store, clock, clients=clients)

    assert run.error is not None and "request budget spent (3 of 3 today" in run.error
    assert len(call_log.operations("ce", "GetCostAndUsage")) == 3
    assert totals(store) == {("111111111111", "Usage"): 3.0}  # October committed before the budget ran out


def test_tag_group_by_fills_tags_owner_and_split_by_fans_out(
    store: Store, clock: FixedClock, clients: dict[str, Any], aws_session: Any, call_log: CallLog
) -> None:
    client = aws_session.client("ce", region_name="us-east-1")
    stub = Stubber(client)
    period = {"Start": "2026-11-19", "End": "2026-11-21"}
    stub.add_response(
        "get_dimension_values",
        {
            "DimensionValues": [{"Value": "111111111111", "Attributes": {}}],
            "ReturnSize": 1,
            "TotalSize": 2,
            "NextPageToken": "n",
        },
    )
    stub.add_response(
        "get_dimension_values",
        {"DimensionValues": [{"Value": "222222222222", "Attributes": {}}], "ReturnSize": 1, "TotalSize": 2},
    )
    for account, owner, cost in (("111111111111", "alice", 4.0), ("222222222222", "", 6.0)):
        stub.add_response(
            "get_cost_and_usage",
            ce_page([("2026-11-19", "2026-11-20", [([f"owner${owner}", "Amazon Athena"], cost, cost)], False)]),
            expected_params={
                "TimePeriod": period,
                "Granularity": "DAILY",
                "Metrics": ["UnblendedCost", "AmortizedCost"],
                "GroupBy": [{"Type": "TAG", "Key": "owner"}, {"Type": "DIMENSION", "Key": "SERVICE"}],
                "Filter": {
                    "And": [
                        {"Dimensions": {"Key": "LINKED_ACCOUNT", "Values": [account], "MatchOptions": ["EQUALS"]}},
                        {
                            "Dimensions": {
                                "Key": "RECORD_TYPE",
                                "Values": ["Usage", "DiscountedUsage", "Savings Plan Covered Usage"],
                            }
                        },
                    ]
                },
            },
        )
        stub.add_response("get_cost_and_usage", ce_page([]))
    stub.activate()
    cfg = config(None, backfill="1d", group_by=["TAG:owner", "SERVICE"], split_by="LINKED_ACCOUNT")

    run = collect_source(cfg, store, clock, clients={**clients, "aws:ce": client})

    assert run.ok, run.error or run.problems
    stub.assert_no_pending_responses()
    rows = store.query("SELECT sub_account_id, owner, tags, billed_cost FROM cost_lines ORDER BY 1")
    assert rows == [("111111111111", "alice", {"owner": "alice"}, 4.0), ("222222222222", None, None, 6.0)]
    assert run.counters["aws_ce_requests"] == 6


def test_access_denied_is_one_line_naming_the_permission(
    store: Store, clock: FixedClock, clients: dict[str, Any], aws_session: Any, call_log: CallLog
) -> None:
    client = aws_session.client("ce", region_name="us-east-1")
    stub = Stubber(client)
    stub.add_client_error(
        "get_cost_and_usage", "AccessDeniedException", "User: arn:aws:sts::1:assumed-role/x is not authorized"
    )
    stub.activate()

    run = collect_source(config(None), store, clock, clients={**clients, "aws:ce": client})

    assert run.error == (
        "source ce: AWS denied ce:GetCostAndUsage (AccessDeniedException); grant it to the collector's role "
        "(see deploy/aws/collector-policy.json)"
    )
    assert store.query("SELECT count(*) FROM cost_lines") == [(0,)]


def test_expired_credentials_say_so(store: Store, clock: FixedClock, clients: dict[str, Any], aws_session: Any) -> None:
    client = aws_session.client("ce", region_name="us-east-1")
    stub = Stubber(client)
    stub.add_client_error(
        "get_cost_and_usage", "ExpiredTokenException", "The security token included in the request is expired"
    )
    stub.activate()

    run = collect_source(config(None), store, clock, clients={**clients, "aws:ce": client})

    assert run.error is not None and "credentials are expired or invalid (ExpiredTokenException)" in run.error


def test_throttling_and_5xx_are_retried_with_backoff(
    store: Store, clock: FixedClock, clients: dict[str, Any], aws_session: Any, sleeps: list[float]
) -> None:
    client = aws_session.client("ce", region_name="us-east-1")
    stub = Stubber(client)
    stub.add_client_error("get_cost_and_usage", "ThrottlingException", "Rate exceeded", http_status_code=400)
    stub.add_client_error("get_cost_and_usage", "InternalServerError", "oops", http_status_code=503)
    stub.add_response(
        "get_cost_and_usage",
        ce_page([("2026-11-18", "2026-11-19", [(["111111111111", "Amazon S3"], 2.0, 2.0)], False)]),
    )
    stub.add_response("get_cost_and_usage", ce_page([]))
    stub.activate()

    run = collect_source(config(None), store, clock, clients={**clients, "aws:ce": client})

    assert run.ok, run.error
    assert len(sleeps) == 2 and run.counters["aws_retries"] == 2
    assert totals(store) == {("111111111111", "Usage"): 2.0}


def test_persistent_throttling_gives_up_with_one_line(
    store: Store, clock: FixedClock, clients: dict[str, Any], aws_session: Any, sleeps: list[float]
) -> None:
    client = aws_session.client("ce", region_name="us-east-1")
    stub = Stubber(client)
    for _ in range(4):
        stub.add_client_error("get_cost_and_usage", "ThrottlingException", "Rate exceeded")
    stub.activate()

    run = collect_source(config(None), store, clock, clients={**clients, "aws:ce": client})

    assert run.problems == [
        "ce 2026-11-17..2026-11-21 daily: source ce: ce GetCostAndUsage still failing after 4 attempts: "
        "ThrottlingException: Rate exceeded"
    ]
    assert len(sleeps) == 3


def test_a_malformed_month_is_a_problem_and_other_months_still_load(
    moto_server: Any, store: Store, clock: FixedClock, clients: dict[str, Any]
) -> None:
    clock.set(datetime(2026, 11, 2, 9, 0, tzinfo=UTC))
    broken = {
        "ResultsByTime": [
            {
                "TimePeriod": {"Start": "2026-10-30", "End": "2026-10-31"},
                "Groups": [{"Keys": ["1", "S3"], "Metrics": {}}],
            }
        ]
    }
    november = ce_page([("2026-11-01", "2026-11-02", [(["111111111111", "Amazon S3"], 8.0, 8.0)], True)])
    moto_server.seed_cost_explorer([broken, november, ce_page([])])
    store.set_state("ce", "loaded_until", "2026-10-20T00:00:00+00:00")

    run = collect_source(config(moto_server, restatement_window="4d"), store, clock, clients=clients)

    assert len(run.problems) == 1 and "has no numeric UnblendedCost" in run.problems[0]
    assert "2026-10-20..2026-11-01" in run.problems[0]
    assert totals(store) == {("111111111111", "Usage"): 8.0}
    # The failed month is fetched again next time.
    assert store.get_state("ce", "loaded_until") == "2026-10-20T00:00:00+00:00"


def test_plan_chunks_split_months_and_the_hourly_tail() -> None:
    chunks = plan_chunks(
        datetime(2026, 10, 30, tzinfo=UTC), datetime(2026, 11, 5, tzinfo=UTC), datetime(2026, 11, 3, tzinfo=UTC)
    )
    assert [(c.start.day, c.end.day, c.granularity) for c in chunks] == [
        (30, 1, "DAILY"),
        (1, 3, "DAILY"),
        (3, 5, "HOURLY"),
    ]


def test_policy_check_catches_an_action_the_policy_lacks(tmp_path: Path) -> None:
    from tests.doubles.aws_calls import POLICY, denied

    assert denied({"ce:GetCostAndUsage", "s3:ListBucket", "athena:BatchGetQueryExecution"}) == set()
    assert denied({"ec2:TerminateInstances", "s3:DeleteObject"}) == {"ec2:TerminateInstances", "s3:DeleteObject"}
    narrowed = tmp_path / "policy.json"
    document = json.loads(POLICY.read_text())
    for statement in document["Statement"]:
        actions = statement["Action"]
        if isinstance(actions, list) and "ce:GetCostAndUsage" in actions:
            actions.remove("ce:GetCostAndUsage")
    narrowed.write_text(json.dumps(document))
    assert denied({"ce:GetCostAndUsage"}, narrowed) == {"ce:GetCostAndUsage"}
