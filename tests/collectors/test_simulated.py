"""The ``simulated`` source: a realistic, deterministic estate with the injected incidents."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow.compute as pc
import pytest

from spendwatch.collectors.simulated import SimulatedEstate

END = datetime(2026, 11, 26, 6, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def estate() -> tuple[SimulatedEstate, object, object]:
    sim = SimulatedEstate(seed=7, days=90, end=END)
    lines, jobs = sim.generate()
    return sim, lines.to_pandas(), jobs.to_pandas()


def test_same_seed_same_estate_to_the_cent() -> None:
    a_lines, a_jobs = SimulatedEstate(3, 30, END).generate()
    b_lines, b_jobs = SimulatedEstate(3, 30, END).generate()
    assert a_lines.equals(b_lines) and a_jobs.equals(b_jobs)
    c_lines, _ = SimulatedEstate(4, 30, END).generate()
    assert pc.sum(c_lines["billed_cost"]).as_py() != pc.sum(a_lines["billed_cost"]).as_py()


def test_the_estate_is_an_ml_and_data_organisation_on_two_clouds(estate) -> None:  # type: ignore[no-untyped-def]
    _, lines, jobs = estate
    assert set(lines["provider"]) == {"aws", "gcp"}
    assert lines.groupby("provider")["sub_account_id"].nunique().min() >= 4
    assert lines["service_name"].nunique() >= 15
    people = set(jobs["user"].dropna()) | set(lines["owner"].dropna())
    assert len(people) >= 20
    assert {"bigquery", "athena", "glue", "emr", "dataproc", "sagemaker", "vertex"} <= set(jobs["platform"])
    scheduled = jobs[jobs["platform"] == "glue"]
    assert scheduled["start_time"].dt.hour.nunique() == 1  # a nightly schedule, not ad-hoc


def test_it_ends_at_the_last_complete_hour_and_spans_the_days_asked(estate) -> None:  # type: ignore[no-untyped-def]
    _, lines, _ = estate
    assert lines["charge_period_end"].max() == END.replace(minute=0)
    assert lines["charge_period_start"].min() == (END.replace(hour=0, minute=0) - timedelta(days=89))


def test_fees_credits_and_taxes_are_present_and_first_of_month(estate) -> None:  # type: ignore[no-untyped-def]
    _, lines, _ = estate
    categories = set(lines["charge_category"])
    assert {"Usage", "Purchase", "Credit", "Tax"} <= categories
    monthly = lines[lines["charge_category"].isin(["Credit", "Tax"])]
    assert set(monthly["charge_period_start"].dt.day) == {1}
    assert (lines.loc[lines["charge_category"] == "Credit", "billed_cost"] < 0).all()


def test_weekly_seasonality_and_growth_are_visible(estate) -> None:  # type: ignore[no-untyped-def]
    _, lines, _ = estate
    usage = lines[(lines["charge_category"] == "Usage") & (lines["sub_account_id"] == "567890123456")]
    daily = usage.groupby(usage["charge_period_start"].dt.floor("D"))["billed_cost"].sum()
    weekday = daily[daily.index.day_of_week < 5].median()
    weekend = daily[daily.index.day_of_week >= 5].median()
    assert weekend < 0.8 * weekday


def test_the_injected_incidents_are_in_the_data(estate) -> None:  # type: ignore[no-untyped-def]
    sim, lines, jobs = estate
    incidents = {i.key: i for i in sim.scenario}
    runaway = jobs[jobs["job_id"] == incidents["runaway-query"].culprit_job].iloc[0]
    assert runaway["user"] == "dana.kim@example.com" and runaway["estimated_cost"] == pytest.approx(8400.0)
    training = jobs[jobs["job_id"] == incidents["forgotten-training"].culprit_job].iloc[0]
    assert training["state"] == "RUNNING" and training["instance_type"] == "ml.p4d.24xlarge"
    bucket = lines[lines["resource_id"] == "arn:aws:s3:::dp-tmp-shuffle"]
    per_day = bucket.groupby(bucket["charge_period_start"].dt.floor("D"))["billed_cost"].sum()
    leak_start = pd_ts(incidents["storage-leak"].start)
    assert per_day[per_day.index >= leak_start].is_monotonic_increasing or per_day.iloc[-2] > 4 * per_day.iloc[0]
    dip = incidents["weekend-dip"]
    ec2 = lines[(lines["sub_account_id"] == "456789012345") & (lines["service_name"] == "Amazon Elastic Compute Cloud")]
    in_dip = ec2[(ec2["charge_period_start"] >= pd_ts(dip.start)) & (ec2["charge_period_start"] < pd_ts(dip.end))]
    week_before = ec2[
        (ec2["charge_period_start"] >= pd_ts(dip.start) - timedelta(days=7))
        & (ec2["charge_period_start"] < pd_ts(dip.end) - timedelta(days=7))
    ]
    assert in_dip["billed_cost"].sum() < 0.5 * week_before["billed_cost"].sum()


def test_without_incidents_none_are_injected() -> None:
    _lines, jobs = SimulatedEstate(7, 30, END, incidents=False).generate()
    frame = jobs.to_pandas()
    assert "bquxjob_7f3a2c91_runaway" not in set(frame["job_id"])
    assert (frame["state"] != "RUNNING").all()


def pd_ts(value: datetime):  # type: ignore[no-untyped-def]
    import pandas as pd

    return pd.Timestamp(value)
