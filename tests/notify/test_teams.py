"""A digest per team: which team a line, a person and an incident belong to (routes, the team tag,
``untagged``), each team's own digest, the FinOps table, alerts routed by team — on the small estate."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from spendwatch.notify.alerts import run_alerts
from spendwatch.notify.send import digest_parts
from spendwatch.notify.teams import UNTAGGED, team_map, team_sql
from spendwatch.store import Store
from spendwatch.store.schema import JOB_SCHEMA
from tests.doubles.clock import FixedClock
from tests.notify import small_estate
from tests.notify.estate import insert_incident
from tests.notify.small_estate import NOW, REPORT_DAY, month_total

NOVEMBER = date(2026, 11, 1)
ROUTES = [
    {"name": "ml-research", "recipients": ["ml@example.com"]},  # by its team-tag value
    {"name": "serving", "recipients": ["serving@example.com"]},
    {"name": UNTAGGED, "recipients": ["hygiene@example.com"]},  # what no route and no tag claims
]
NOTIFY = {
    "channels": [{"name": "outbox", "type": "folder", "path": "outbox"}],
    "digest": {"recipients": ["finops@example.com"]},
    "alerts": {"channels": ["outbox"], "recipients": ["finops@example.com"]},
    "routes": ROUTES,
}


def teams_by_account(store: Store, notify: Any) -> dict[str, str]:
    expression, params = team_sql(notify)
    rows = store.query(f"SELECT DISTINCT sub_account_id, {expression} FROM cost_lines", params)
    return {str(account): str(team) for account, team in rows}


def test_a_lines_team_is_the_first_route_claiming_it_else_its_team_tag_else_untagged(tmp_path: Path) -> None:
    routes = [{"name": "platform", "owners": ["BEN@*"], "recipients": ["p@example.com"]}, *ROUTES]
    config, store = small_estate.build(tmp_path, FixedClock(NOW), notify={**NOTIFY, "routes": routes})
    assert teams_by_account(store, config.notify) == {
        "210987654321": "platform",  # ben's route glob wins over his lines' team tag
        "ml-eu": "ml-research",
        "456789012345": "serving",
        "jp-serving": "serving",
        "567890123456": UNTAGGED,
    }
    tag_routes = [{"name": "eu", "accounts": ["ml-*"], "recipients": ["eu@example.com"]}]
    no_tag = type(config.notify).model_validate({**NOTIFY, "team_tag": None, "routes": tag_routes})
    assert set(teams_by_account(store, no_tag).values()) == {"eu", UNTAGGED}  # routes only: tags ignored


def test_people_and_accounts_get_the_team_their_lines_carry_most(tmp_path: Path) -> None:
    config, store = small_estate.build(tmp_path, FixedClock(NOW), notify=NOTIFY)
    teams = team_map(config.notify, store, since=datetime(2026, 10, 1, tzinfo=UTC))
    assert teams.of_owner("Kai@Example.com") == "serving"
    assert teams.of_owner("ben@example.com") == "ml-research"
    assert teams.of_account("567890123456") is None  # an untagged account names no team
    assert teams.of_parties(["ana@example.com"], ["456789012345"]) == ("ml-research",)  # a person before an account
    assert teams.of_parties([None], ["456789012345"]) == ("serving",)
    assert teams.of_parties([None, "nobody@example.com"], ["999"]) == (UNTAGGED,)


def add_jobs(store: Store) -> None:
    start = datetime(REPORT_DAY.year, REPORT_DAY.month, REPORT_DAY.day, 10, tzinfo=UTC)
    jobs = [
        ("sagemaker", "train-ben", "210987654321", "ben@example.com", 812.5),
        ("emr", "batch-kai", "456789012345", "kai@example.com", 95.25),
        ("athena", "q-anon", "567890123456", None, 7.0),
    ]
    rows = [
        {"platform": p, "job_id": j, "provider": "aws", "sub_account_id": a, "user": u, "name": j, "state": "DONE",
         "start_time": start, "end_time": start + timedelta(hours=1), "estimated_cost": c, "billing_currency": "USD"}
        for p, j, a, u, c in jobs
    ]  # fmt: skip
    store.upsert_jobs("bills", pa.Table.from_pylist(rows, schema=JOB_SCHEMA))


def incident(store: Store, owner: str | None, account: str, impact: float, **more: Any) -> int:
    dimensions = {"provider": "aws", "sub_account_id": account}
    if owner:
        dimensions["owner"] = owner
    return insert_incident(
        store, now=NOW, dimensions=json.dumps(dimensions), impact=impact, series_key=f"k|{account}|{owner}", **more
    )


@pytest.fixture
def teams_world(tmp_path: Path) -> tuple[Any, Store, FixedClock, dict[str, int]]:
    clock = FixedClock(NOW)
    config, store = small_estate.build(
        tmp_path, clock, notify=NOTIFY, budgets=[{"name": "ml", "team": "ml-research", "amount": 20_000}]
    )
    ids = {
        "ben": incident(store, "ben@example.com", "210987654321", 900.0, severity="critical"),
        "kai": incident(store, "kai@example.com", "456789012345", 300.0),
        "sandbox": incident(store, None, "567890123456", 120.0),
    }
    add_jobs(store)
    return config, store, clock, ids


def test_each_team_gets_its_own_digest_and_finops_the_whole_estate_with_a_table(
    teams_world: tuple[Any, Store, FixedClock, dict[str, int]],
) -> None:
    config, store, clock, ids = teams_world
    parts = {part.key: part for part in digest_parts(config, store, clock, NOW.date())}
    assert set(parts) == {"finops", "team:ml-research", "team:serving", f"team:{UNTAGGED}"}
    assert parts["team:ml-research"].recipients == ("ml@example.com",)

    finops = parts["finops"].digest
    assert {v.incident.id for v in finops.incidents} == set(ids.values())
    rows = {(t.team, t.spend.currency): t for t in finops.teams}
    assert set(rows) == {("ml-research", "USD"), ("ml-research", "EUR"), ("serving", "USD"), ("serving", "JPY"),
                         (UNTAGGED, "USD")}  # fmt: skip
    ml_usd = rows[("ml-research", "USD")]
    assert ml_usd.month.to_date == pytest.approx(
        month_total(NOVEMBER, currency="USD", keep=lambda r: dict(r["tags"]).get("team") == "ml-research")
    )
    assert ml_usd.budget == 20_000 and ml_usd.incidents == 1 and ml_usd.has_digest
    assert [t.team for t in finops.teams][-1] == UNTAGGED  # untagged comes last

    ml = parts["team:ml-research"].digest
    assert ml.team == "ml-research" and not ml.teams
    assert [v.incident.id for v in ml.incidents] == [ids["ben"]]
    assert [j.job_id for j in ml.jobs] == ["train-ben"]
    spend = {(r.provider, r.currency): r.actual for r in ml.providers}
    assert spend == pytest.approx(
        {("aws", "USD"): small_estate.cost(small_estate.LINES[0], REPORT_DAY),
         ("gcp", "EUR"): small_estate.cost(small_estate.LINES[1], REPORT_DAY)}
    )  # fmt: skip
    assert {m.currency for m in ml.month} == {"USD", "EUR"}
    assert [m.forecast for m in ml.month if m.currency == "USD"] == [ml_usd.month.forecast]  # same numbers
    assert [b.budget.name for b in ml.budgets] == ["ml"]

    serving = parts["team:serving"].digest
    assert [v.incident.id for v in serving.incidents] == [ids["kai"]]
    assert [j.job_id for j in serving.jobs] == ["batch-kai"]
    assert not serving.budgets

    untagged = parts[f"team:{UNTAGGED}"].digest
    assert [v.incident.id for v in untagged.incidents] == [ids["sandbox"]]
    assert [j.job_id for j in untagged.jobs] == ["q-anon"]


def test_one_money_format_per_currency_in_every_part(
    teams_world: tuple[Any, Store, FixedClock, dict[str, int]],
) -> None:
    from spendwatch.notify.render import render_digest

    config, store, clock, _ = teams_world
    for part in digest_parts(config, store, clock, NOW.date()):
        text = render_digest(part.digest, "{date}", charts=False).text
        assert re.findall(r"¥[\d,]+\.\d", text) == []  # yen never with decimals
        assert re.findall(r"\$[\d,]+(?![\d,]*\.\d\d)", text) == []  # dollars always with cents
        assert re.findall(r"€[\d,]+(?![\d,]*\.\d\d)", text) == []
        assert re.findall(r"\d (USD|EUR|JPY)\b", text) == []  # never "8,400.00 USD" beside "$8,400.00"
        if part.digest.team in (None, "serving"):
            assert re.search(r"¥\d{1,3}(,\d{3})+\b", text)


def test_alerts_go_to_the_team_their_subject_belongs_to(
    teams_world: tuple[Any, Store, FixedClock, dict[str, int]], tmp_path: Path
) -> None:
    config, store, clock, ids = teams_world
    run = run_alerts(config, store, clock)
    assert run.failed == 0
    outbox = tmp_path / "outbox"
    to = {}
    for key, who in (("ben", "ml@example.com"), ("kai", "serving@example.com"), ("sandbox", "hygiene@example.com")):
        [mail] = outbox.glob(f"alert-incident_{ids[key]}_*.eml")
        to[key] = mail.read_text()
        assert who in to[key] and "finops@example.com" in to[key]
    assert "serving@example.com" not in to["ben"] and "ml@example.com" not in to["kai"]
