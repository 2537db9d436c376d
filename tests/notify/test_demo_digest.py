"""The demo's digest, read as a FinOps lead reads it: every figure is derived from the demo's store here,
never hard-coded (the estate grows: Kubernetes clusters, more teams).

One demo run (the embedded config, 120 days, seed 7) for the whole file: ``--dist loadfile`` keeps it
on one worker.
"""

from __future__ import annotations

import re
import shlex
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from spendwatch.cli import main
from spendwatch.demo import DemoResult, run_demo
from spendwatch.detect.incidents import load_incidents
from spendwatch.forecast import daily_series, run_rate_month
from spendwatch.money import format_money
from spendwatch.notify.charts import CLIP_FACTOR, incident_chart, y_limit
from spendwatch.notify.digest import Digest, IncidentView
from spendwatch.notify.render import render_digest
from spendwatch.notify.send import digest_parts
from spendwatch.store import Store
from spendwatch.store.records import SEVERITY_ORDER
from tests.doubles.clock import FixedClock

pytestmark = pytest.mark.slow  # runs first (tests/conftest.py): it is among the suite's longest files

DEMO_NOW = datetime(2026, 12, 4, 9, 30, tzinfo=UTC)  # a Friday: the runaway query ran yesterday, the 3rd
README = Path(__file__).resolve().parents[2] / "README.md"


class Demo:
    def __init__(self, folder: Path) -> None:
        self.clock = FixedClock(DEMO_NOW)
        self.result: DemoResult = run_demo(folder, self.clock, say=lambda _: None)
        from spendwatch.config import load_config

        self.config = load_config(self.result.config_path)
        self.store = Store(self.config.store.path, clock=self.clock)
        self.parts = {p.key: p for p in digest_parts(self.config, self.store, self.clock, DEMO_NOW.date())}
        self.digest: Digest = self.parts["finops"].digest
        rendered = render_digest(self.digest, "{date}: {headline}", charts=False)
        self.text, self.html = rendered.text, rendered.html

    def digest_on(self, day: date) -> Digest:
        clock = FixedClock(datetime(day.year, day.month, day.day, 9, 30, tzinfo=UTC))
        return digest_parts(self.config, Store(self.config.store.path, clock=clock), clock, day)[0].digest


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    return Demo(tmp_path_factory.mktemp("demo") / "spendwatch-demo")


def usage_by_day(store: Store, until: date) -> pd.Series:
    rows = store.query(
        "SELECT CAST(date_trunc('day', charge_period_start) AS DATE), sum(effective_cost) FROM cost_lines "
        "WHERE charge_category = 'Usage' AND billing_currency = 'USD' GROUP BY 1"
    )
    values = dict(rows)
    return daily_series(values, min(values), until)


def other_charges(store: Store, first: date, until: date) -> float:
    [(total,)] = store.query(
        "SELECT coalesce(sum(effective_cost), 0) FROM cost_lines WHERE charge_category <> 'Usage' "
        "AND billing_currency = 'USD' AND charge_period_start >= ? AND charge_period_start < ?",
        [datetime(first.year, first.month, first.day, tzinfo=UTC),
         datetime(until.year, until.month, until.day, tzinfo=UTC) + timedelta(days=1)],
    )  # fmt: skip
    return float(total)


@pytest.mark.parametrize("report_day", [date(2026, 12, 1), date(2026, 12, 2), date(2026, 12, 3)])
def test_the_month_end_forecast_is_not_low_on_the_first_days_of_a_month(demo: Demo, report_day: date) -> None:
    digest = demo.digest_on(report_day + timedelta(days=1))
    [usd] = [m for m in digest.month if m.currency == "USD"]
    usage = usage_by_day(demo.store, report_day)
    first = report_day.replace(day=1)
    naive = run_rate_month(usage, report_day, other_to_date=other_charges(demo.store, first, report_day))
    november = float(usage[pd.Timestamp(2026, 11, 1) : pd.Timestamp(2026, 11, 30)].sum())

    assert usd.days_covered == report_day.day
    # Near the naive seven-day run-rate (which the model beats in benchmarks/bench_forecast.py) …
    assert 0.85 * naive < usd.forecast < 1.25 * naive
    # … and a December like November (31 days, not 30), not a third of it.
    assert 0.9 * november * 31 / 30 < usd.forecast < 1.4 * november * 31 / 30
    to_date = float(usage[pd.Timestamp(first) : pd.Timestamp(report_day)].sum())
    first_digest = to_date + to_date / 7 * (31 - report_day.day)  # the first digest's run-rate
    assert usd.forecast > {1: 2.5, 2: 2.5, 3: 1.5}[report_day.day] * first_digest  # it was ~day/7 of the rate
    assert usd.lower < usd.forecast < usd.upper


def test_the_digest_is_dated_for_its_headline_incident_and_lists_nothing_later(demo: Demo) -> None:
    digest = demo.digest
    assert (digest.day, digest.report_day) == (date(2026, 12, 4), date(2026, 12, 3))
    assert demo.text.startswith("spendwatch daily digest — Friday 04 December 2026")
    assert "Spend on 2026-12-03 (UTC day)" in demo.text
    alerting = [i for v in digest.alerting for i in v.members if i.is_alerting]
    largest = max(alerting, key=lambda i: i.impact)
    assert format_money(largest.impact, "USD", signed=True) in digest.headline
    assert largest.last_seen.date() == digest.report_day  # the headline is about the day reported on
    assert largest.jobs[0].job_id == "bquxjob_7f3a2c91_runaway"
    end_of_day = datetime(2026, 12, 5, tzinfo=UTC)
    shown = [i for v in (*digest.incidents, *digest.collapsed) for i in v.members]
    assert shown and all(i.first_seen < min(end_of_day, DEMO_NOW) for i in shown)
    assert next(p.name for p in demo.result.digest) == "spendwatch-digest-2026-12-04.html"


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def visible(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    return " ".join(" ".join(parser.parts).split())


def test_one_money_format_per_currency(demo: Demo) -> None:
    for name, text in (("text", demo.text), ("html", visible(demo.html))):
        amounts = re.findall(r"[+\u2212]?\$[\d,]+(?:\.\d+)?", text)
        assert len(amounts) > 50, name
        bad = [a for a in amounts if not re.fullmatch(r"[+\u2212]?\$\d{1,3}(,\d{3})*\.\d{2}", a)]
        assert bad == [], f"{name}: {bad[:5]}"
        assert re.findall(r"\d USD\b|\bUSD \d", text) == [], name  # "+16.20 USD" beside "$16.20" is gone
        assert "(none)" not in text


def test_each_card_is_explained_by_its_own_numbers(demo: Demo) -> None:
    cards = demo.digest.incidents
    assert cards
    for view in cards:
        incident = view.incident
        for culprit in view.culprits:
            if culprit.role == "job":
                job = next(j for j in incident.jobs if (j.name or j.job_id) == culprit.name)
                assert culprit.cost == job.cost
                continue
            # A contributor's dollars are its share of this card's headline excess.
            contributor = next(c for c in incident.contributors if culprit.name in (c.value, "untagged"))
            assert culprit.cost == pytest.approx(contributor.share * incident.impact)
        sentence = view.culprit
        money = re.findall(r"[+\u2212]?\$[\d,]+\.\d\d", sentence)
        assert len(money) == 1, sentence
        in_card = {format_money(c.cost, incident.billing_currency, signed=c.role != "job") for c in view.culprits
                   if c.cost is not None}  # fmt: skip
        in_card.add(format_money(incident.impact, incident.billing_currency))
        assert money[0] in in_card, (sentence, in_card)


def test_no_untagged_owner_beside_named_peoples_jobs(demo: Demo) -> None:
    for view in demo.digest.incidents:
        if any(job.user for job in view.incident.jobs):
            assert not [c for c in view.culprits if c.role == "owner" and c.name == "untagged"], view.title
    assert "owner: untagged" not in demo.text
    assert not re.search(r"(job id|resource id): untagged", demo.text)


def rank(view: IncidentView) -> tuple[bool, int, bool]:
    order = list(SEVERITY_ORDER)
    return (view.incident.severity != "critical", -order.index(view.incident.severity), not view.is_new)


def test_critical_and_new_come_first(demo: Demo) -> None:
    cards = demo.digest.incidents
    assert cards[0].incident.severity == "critical"
    assert [rank(v) for v in cards] == sorted(rank(v) for v in cards)
    texts = [f"#{v.incident.id} " for v in cards]
    positions = [demo.text.index(f"] {t}") for t in texts]
    assert positions == sorted(positions)  # the email shows them in that order


def test_settled_small_incidents_take_one_line_each(demo: Demo) -> None:
    digest = demo.digest
    order = list(SEVERITY_ORDER)
    limit = order.index(demo.config.notify.digest.collapse_below)
    assert digest.collapsed, "the demo has a resolved hourly blip"
    for view in digest.collapsed:
        assert not view.is_alerting and (order.index(view.incident.severity) < limit or view.incident.kind == "drop")
        [line] = [line for line in demo.text.splitlines() if f"#{view.incident.id} [" in line]
        assert view.incident.status in line and "Culprit" not in line
    for view in digest.incidents:
        assert view.is_alerting or order.index(view.incident.severity) >= limit
    assert len(digest.incidents) <= demo.config.notify.digest.max_incidents
    # One card per cause: the runaway query's daily, hourly, owner and guard incidents are one card.
    runaway = [v for v in digest.incidents if any(j.job_id.endswith("bquxjob_7f3a2c91_runaway") for i in v.members
               for j in i.jobs)]  # fmt: skip
    assert len(runaway) == 1 and len(runaway[0].related) >= 3


def test_hourly_charts_are_scaled_to_their_incident(demo: Demo) -> None:
    hourly = [i for i in load_incidents(demo.store, statuses=None) if i.granularity == "hourly" and len(i.points) > 2]
    dwarfed = 0
    for incident in hourly:
        window = (incident.first_seen, incident.last_seen)
        own = max(max(p.actual, p.upper, p.expected) for p in incident.points if window[0] <= p.at <= window[1])
        everything = max(p.actual for p in incident.points)
        top = y_limit(incident.points, window)
        assert top >= own  # the incident itself is never clipped
        if everything > CLIP_FACTOR * own:
            dwarfed += 1
            assert top <= 1.2 * max(own, *(p.upper for p in incident.points))  # not the $8k step beside it
            png = incident_chart(incident.points, incident.billing_currency, granularity="hourly", window=window)
            assert png is not None and png.startswith(b"\x89PNG")
    assert dwarfed >= 1, "the demo has a small hourly blip in the window of the runaway query"


def test_the_kill_switch_plans_are_in_the_digest_in_the_same_money(demo: Demo) -> None:
    plans = demo.digest.plans
    assert "stop" in {a.verb for a in plans}  # the forgotten training job
    for action in plans:
        assert "USD" not in action.reason and re.search(r"[+\u2212]\$[\d,]+\.\d\d", action.reason)
    assert "Dry-run plan" in demo.text


def test_the_printed_commands_open_the_demos_store(demo: Demo) -> None:
    runner = CliRunner()
    commands = demo.result.commands()
    assert commands[0] == f"spendwatch -c {shlex.quote(str(demo.result.config_path))} anomalies list"
    outputs = {}
    for command in commands:
        argv = shlex.split(command)
        assert argv[0] == "spendwatch"
        result = runner.invoke(main, argv[1:])
        assert result.exit_code == 0, (command, result.output)
        outputs[argv[3]] = result.output
    assert "bquxjob_7f3a2c91_runaway" in outputs["anomalies"]
    assert "dry-run" in outputs["actions"] and "llm-finetune-ben-0412" in outputs["actions"]
    assert "will-exceed" in outputs["budgets"] or "at-risk" in outputs["budgets"] or "ok" in outputs["budgets"]


def test_the_team_digest_of_the_demo_is_its_own(demo: Demo) -> None:
    team = demo.parts["team:ml-research"].digest
    assert team.team == "ml-research" and not team.teams
    assert all("ml-research" in v.teams for v in (*team.incidents, *team.collapsed))
    assert {b.budget.name for b in team.budgets} == {"ml-research"}
    finops_row = next(t for t in demo.digest.teams if t.team == "ml-research" and t.spend.currency == "USD")
    assert [m.forecast for m in team.month if m.currency == "USD"] == [finops_row.month.forecast]
    assert any(name.endswith("team-ml-research.html") for name in (p.name for p in demo.result.digest))
