"""The ``guard:`` section: defaults, inheritance, first-match, and every validator fed bad input."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from spendwatch.config import parse_config
from spendwatch.errors import ConfigError
from spendwatch.guard.config import GuardConfig
from spendwatch.guard.watch import watched_sources

BIGQUERY_JOB = {
    "platform": "bigquery",
    "provider": "gcp",
    "sub_account_id": "analytics-prod",
    "user": "dana.kim@example.com",
    "labels": {"team": "data"},
}


def test_defaults_poll_every_minute_with_sensible_caps() -> None:
    guard = GuardConfig()
    assert guard.every == timedelta(seconds=60)
    assert guard.defaults.job_cost == 500 and guard.defaults.job_projected_cost == 2000
    assert guard.defaults.max_runtime is None and guard.killswitch is True
    assert guard.job_limit(BIGQUERY_JOB, "job_cost") == ("default", 500.0, guard.defaults)


def test_first_matching_guard_wins_and_left_out_limits_inherit() -> None:
    guard = GuardConfig.model_validate(
        {
            "defaults": {"job_cost": 100, "max_runtime": "6h"},
            "guards": [
                {
                    "name": "warehouse",
                    "match": {"platforms": ["bigquery"], "accounts": ["analytics-*"]},
                    "job_cost": 900,
                },
                {"name": "all-bq", "match": {"platforms": ["bigquery"]}, "job_cost": 50, "max_runtime": None},
            ],
        }
    )
    name, value, _ = guard.job_limit(BIGQUERY_JOB, "job_cost")
    assert (name, value) == ("warehouse", 900)
    assert guard.job_limit(BIGQUERY_JOB, "max_runtime")[1] == timedelta(hours=6)  # inherited
    other = {**BIGQUERY_JOB, "sub_account_id": "sandbox"}
    assert guard.job_limit(other, "job_cost")[:2] == ("all-bq", 50)
    assert guard.job_limit(other, "max_runtime")[1] is None  # explicitly switched off
    athena = {**BIGQUERY_JOB, "platform": "athena", "provider": "aws"}
    assert guard.job_limit(athena, "job_cost")[:2] == ("default", 100)


def test_match_on_users_and_labels() -> None:
    guard = GuardConfig.model_validate(
        {
            "guards": [
                {"name": "interns", "match": {"users": ["*@interns.example.com"]}, "job_cost": 5},
                {"name": "data-team", "match": {"labels": {"team": ["data", "analytics"]}}, "job_cost": 50},
                {"name": "labelled", "match": {"labels": {"cost-center": []}}, "job_cost": 60},
            ]
        }
    )
    assert guard.job_limit({**BIGQUERY_JOB, "user": "x@interns.example.com"}, "job_cost")[0] == "interns"
    assert guard.job_limit(BIGQUERY_JOB, "job_cost")[0] == "data-team"
    assert guard.job_limit({**BIGQUERY_JOB, "labels": {"cost-center": "42"}}, "job_cost")[0] == "labelled"
    assert guard.job_limit({**BIGQUERY_JOB, "labels": {}}, "job_cost")[0] == "default"


def test_aggregates_are_not_inherited() -> None:
    guard = GuardConfig.model_validate(
        {
            "defaults": {"user_daily_cost": 1000, "project_burn_rate": None},
            "guards": [{"name": "bq", "match": {"platforms": ["bigquery"]}, "project_burn_rate": 80}],
        }
    )
    assert [s[0] for s in guard.aggregate_scopes("user_daily_cost")] == ["default"]
    assert [(s[0], s[2]) for s in guard.aggregate_scopes("project_burn_rate")] == [("bq", 80.0)]


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"every": "10s"}, "at least 15s"),
        ({"every": "2h"}, "at most 1h"),
        ({"every": "soon"}, "is not a duration"),
        ({"platforms": {"glue": {"every": "5s"}}}, "glue.every must be at least 15s"),
        ({"platforms": {"redshift": {}}}, "Input should be"),
        ({"defaults": {"job_cost": -1}}, "greater than or equal to 0"),
        ({"defaults": {"max_runtime": "30s"}}, "at least 1m"),
        ({"defaults": {"severity": "apocalyptic"}}, "Input should be"),
        ({"defaults": {"critical_at": 0.5}}, "greater than or equal to 1"),
        ({"guards": [{"name": "a"}, {"name": "a"}]}, "used twice"),
        ({"guards": [{"name": "default"}]}, "reserved"),
        ({"guards": [{"name": "Bad Name"}]}, "String should match pattern"),
        ({"guards": [{"name": "x", "match": {"platforms": ["ec2"]}}]}, "Input should be"),
        ({"guards": [{"name": "x", "jobcost": 1}]}, "Extra inputs are not permitted"),
        ({"rate_limits": {"bigquery:jobs.lst": 1}}, "unknown API 'bigquery:jobs.lst'"),
        ({"rate_limits": {"emr:DescribeCluster": 6}}, "outside (0, 5]"),
        ({"rate_limits": {"bigquery:jobs.list": 0}}, "outside"),
        ({"day_timezone": "Mars/Olympus"}, "not an IANA time zone"),
        ({"describe_threshold": 0}, "greater than 0"),
        ({"gcp_prices": {"bigquery_on_demand_per_tib": "cheap"}}, "valid number"),
    ],
)
def test_bad_guard_config_is_refused(values: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        GuardConfig.model_validate(values)


def test_a_bad_key_in_the_file_names_file_line_and_key(tmp_path: Path) -> None:
    text = "sources:\n  - {name: demo, type: simulated}\nguard:\n  every: 60s\n  defaults:\n    job_cots: 500\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, tmp_path / "spendwatch.yaml", environ={})
    assert str(caught.value).startswith(f"{tmp_path / 'spendwatch.yaml'}:6: guard.defaults.job_cots: unknown key")


def test_guard_sources_must_name_job_sources(tmp_path: Path) -> None:
    text = (
        "sources:\n  - {name: demo, type: simulated}\n"
        "  - {name: bq, type: gcp-jobs, projects: [analytics-prod]}\n"
        "guard:\n  sources: [NAME]\n"
    )
    # Checked when the config loads, naming the line of guard.sources.
    for name in ("nope", "demo"):
        with pytest.raises(
            ConfigError, match=rf":5: guard.sources: '{name}' is not an aws-jobs, gcp-jobs or kubernetes-jobs source"
        ):
            parse_config(text.replace("NAME", name), tmp_path / "c.yaml", environ={})
    config = parse_config(text.replace("  sources: [NAME]\n", "  every: 30s\n"), tmp_path / "c.yaml", environ={})
    assert [s.name for s in watched_sources(config, config.guard)] == ["bq"]
