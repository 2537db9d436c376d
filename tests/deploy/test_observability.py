"""deploy/grafana/spendwatch.json and deploy/kubernetes/prometheusrule.yaml use only what /metrics exports.

"Exported" is read from a real exposition: a small store with a cost line, an incident, runs, a
guard poll and a digest, scraped through ``metrics.store_registry`` — so a renamed or removed metric
fails here. Every PromQL expression is parsed with a real PromQL parser (``promql_parser``); each
selector must name an exported metric and match only labels that metric has.
"""

from __future__ import annotations

import copy
import json
import re
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pyarrow as pa
import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from spendwatch.config import parse_config
from spendwatch.daemon.metrics import store_registry
from spendwatch.store import Store
from tests.doubles.clock import FixedClock
from tests.notify.estate import insert_incident

promql = pytest.importorskip("promql_parser", reason="pip install -e '.[dev]' brings it")

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "spendwatch.json"
RULES = REPO / "deploy" / "kubernetes" / "prometheusrule.yaml"
NOW = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
# Grafana's variables, as a query would see them once Grafana substituted them.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1d", "${datasource}": "x"}

# The PrometheusRule CRD's openAPIV3Schema (prometheus-operator, monitoring.coreos.com/v1), closed
# (additionalProperties: false) so that a misspelt key fails here instead of being pruned silently.
_DURATION = "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
RULE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "groups": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["name", "rules"],
                        "additionalProperties": False,
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": {"type": "string", "pattern": _DURATION},
                            "limit": {"type": "integer"},
                            "labels": _STRINGS,
                            "query_offset": {"type": "string", "pattern": _DURATION},
                            "rules": {
                                "type": "array",
                                "minItems": 1,
                                "items": {
                                    "type": "object",
                                    "required": ["expr"],
                                    "additionalProperties": False,
                                    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                                    "properties": {
                                        "alert": {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9_]*$"},
                                        "record": {"type": "string", "pattern": "^[a-zA-Z_:][a-zA-Z0-9_:]*$"},
                                        "expr": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
                                        "for": {"type": "string", "pattern": _DURATION},
                                        "keep_firing_for": {"type": "string", "minLength": 1, "pattern": _DURATION},
                                        "labels": _STRINGS,
                                        "annotations": _STRINGS,
                                    },
                                },
                            },
                        },
                    },
                }
            },
        },
    },
}


# -- what /metrics exports -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """Metric name → its label names, from the exposition of a small, realistic store."""
    folder = tmp_path_factory.mktemp("metrics")
    config = parse_config(
        "store: {path: store.duckdb}\nsources:\n"
        "  - {name: bills, type: focus, path: bills.csv}\n"
        "  - {name: gcp-jobs, type: gcp-jobs, gcp: {project: p, anonymous: true}}\n"
        "budgets:\n  - {name: estate, amount: 1000}\n",
        folder / "spendwatch.yaml",
        environ={},
    )
    clock = FixedClock(NOW)
    store = Store(config.store.path, clock=clock)
    day = NOW.replace(hour=0, minute=0) - timedelta(days=1)
    line = {"provider": ["aws"], "sub_account_id": ["111111111111"], "charge_category": ["Usage"],
            "charge_period_start": pa.array([day], pa.timestamp("us", tz="UTC")),
            "charge_period_end": pa.array([day + timedelta(days=1)], pa.timestamp("us", tz="UTC")),
            "billed_cost": [10.0], "effective_cost": [10.0], "billing_currency": ["USD"]}  # fmt: skip
    store.replace_cost_lines("bills", day, day + timedelta(days=1), pa.table(line))
    insert_incident(store)
    for job, status in (("collect:bills", "ok"), ("collect:gcp-jobs", "failed"), ("digest", "ok"), ("guard", "ok")):
        store.finish_run(store.start_run(job), status=status, rows=1, detail={"api_calls": 2})
    with store.transaction() as con:
        con.execute(
            "INSERT INTO jobs (platform, job_id, source, provider, state, start_time, estimated_cost, "
            "billing_currency, first_seen, last_seen) VALUES ('bigquery', 'q1', 'guard:gcp-jobs', 'gcp', 'RUNNING', "
            "?, 50.0, 'USD', ?, ?)",
            [NOW - timedelta(hours=1), NOW, NOW],
        )
        con.execute(
            "INSERT INTO digests (day, status, sent_at) VALUES (?, 'sent', ?)", [NOW.date() - timedelta(days=1), NOW]
        )
        con.execute("INSERT INTO alert_failures VALUES ('incident:1:high', 'slack', 1, ?, ?, ?, 'boom', FALSE)",
                    [NOW, NOW, NOW])  # fmt: skip
    text = generate_latest(store_registry(config, store)).decode()
    names: dict[str, set[str]] = defaultdict(set)
    for family in text_string_to_metric_families(text):
        names.setdefault(family.name, set())  # a family with no sample is still exported
        for sample in family.samples:
            names[sample.name].update(sample.labels)
    return dict(names)


def test_the_exposition_has_the_spend_and_health_families(exported: dict[str, set[str]]) -> None:
    assert {"provider", "account", "currency"} <= exported["spendwatch_spend_month_to_date"]
    assert exported["spendwatch_guard_burn_rate_per_hour"] == {"platform", "currency"}
    assert {"spendwatch_up", "spendwatch_digest_last_sent_timestamp_seconds", "spendwatch_alerts_sent_total"} <= set(
        exported
    )


# -- PromQL ------------------------------------------------------------------------------------------------


def selectors(expr: str) -> list[Any]:
    """Every vector selector in ``expr`` (raises if it is not valid PromQL)."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    found: list[Any] = []
    promql.walk(
        promql.parse(expr), lambda node: found.append(node) if isinstance(node, promql.VectorSelector) else None
    )
    return found


def problems(expr: str, exported: dict[str, set[str]]) -> list[str]:
    out = []
    for selector in selectors(expr):
        name = selector.name
        if not name:
            out.append(f"a selector without a metric name: {expr}")
            continue
        if name not in exported:
            out.append(f"{name} is not exported")
            continue
        for matcher in selector.matchers.matchers:
            if matcher.name not in exported[name]:
                out.append(f"{name} has no label {matcher.name!r}")
    return out


def test_the_checker_catches_unknown_metrics_labels_and_bad_syntax(exported: dict[str, set[str]]) -> None:
    assert problems('sum(spendwatch_spend_month_to_date{currency="$currency"})', exported) == []
    assert problems("rate(spendwatch_spend_total[5m])", exported) == ["spendwatch_spend_total is not exported"]
    assert problems('spendwatch_up{provider="aws"}', exported) == ["spendwatch_up has no label 'provider'"]
    assert problems('{__name__="spendwatch_up"}', exported)
    with pytest.raises(ValueError, match="unclosed left parenthesis"):
        selectors("sum(spendwatch_up")


# -- the Grafana dashboard ------------------------------------------------------------------------------------


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels") or [])


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def test_every_dashboard_query_uses_exported_metrics(dashboard: dict[str, Any], exported: dict[str, set[str]]) -> None:
    queries = [t["expr"] for p in _panels(dashboard["panels"]) for t in p.get("targets", [])]
    assert len(queries) >= 15
    found = [f"{q}: {problem}" for q in queries for problem in problems(q, exported)]
    assert found == []
    spend = {s.name for q in queries for s in selectors(q)}
    assert {"spendwatch_spend_month_to_date", "spendwatch_spend_yesterday", "spendwatch_incidents_open_excess",
            "spendwatch_guard_burn_rate_per_hour", "spendwatch_job_last_success_timestamp_seconds"} <= spend  # fmt: skip


def test_the_dashboard_variables_read_exported_labels(dashboard: dict[str, Any], exported: dict[str, set[str]]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert set(variables) == {"datasource", "currency", "provider"}
    for name in ("currency", "provider"):
        query = variables[name]["query"]["query"]
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", query)
        assert match is not None, query
        assert (
            problems(match.group(1), exported) == [] and match.group(2) in exported[selectors(match.group(1))[0].name]
        )
    used = {
        m for p in _panels(dashboard["panels"]) for t in p.get("targets", []) for m in re.findall(r"\$(\w+)", t["expr"])
    }
    assert used <= set(variables)


def test_the_dashboard_is_a_well_formed_grafana_dashboard(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "spendwatch-spend" and dashboard["title"] and dashboard["schemaVersion"] >= 36
    panels = list(_panels(dashboard["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        mine = {(grid["x"] + dx, grid["y"] + dy) for dx in range(grid["w"]) for dy in range(grid["h"])}
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert panel["targets"] and all(t["refId"] for t in panel["targets"])
            assert panel["type"] in {"stat", "timeseries", "bargauge", "table"}


# -- the PrometheusRule -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rule() -> dict[str, Any]:
    [document] = [d for d in yaml.safe_load_all(RULES.read_text()) if d]
    data: dict[str, Any] = document
    return data


def test_the_prometheus_rule_has_the_crds_structure(rule: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(RULE_SCHEMA).validate(rule)
    assert rule["metadata"]["namespace"] == "spendwatch"
    assert rule["metadata"]["labels"]["app.kubernetes.io/name"] == "spendwatch"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda r: r["spec"]["groups"][0]["rules"][0].pop("expr"),
        lambda r: r["spec"]["groups"][0]["rules"][0].__setitem__("record", "x"),  # both alert and record
        lambda r: r["spec"]["groups"][0]["rules"][0].__setitem__("for", "15 minutes"),
        lambda r: r["spec"]["groups"][0]["rules"][0].__setitem__("expresion", "up"),
        lambda r: r["spec"]["groups"][0].pop("name"),
        lambda r: r.__setitem__("kind", "PrometheusRules"),
    ],
)
def test_the_rule_schema_refuses_a_broken_rule(rule: dict[str, Any], mutate: Any) -> None:
    broken = copy.deepcopy(rule)
    mutate(broken)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(RULE_SCHEMA).validate(broken)


def test_every_alert_uses_exported_metrics_and_says_what_to_do(
    rule: dict[str, Any], exported: dict[str, set[str]]
) -> None:
    alerts = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    names = [r["alert"] for r in alerts]
    assert len(names) == len(set(names))
    found = [f"{r['alert']}: {p}" for r in alerts for p in problems(str(r["expr"]), exported)]
    assert found == []
    for alert in alerts:
        assert alert["labels"]["severity"] in {"critical", "warning", "info"}, alert["alert"]
        assert alert["annotations"]["summary"] and alert["annotations"]["description"], alert["alert"]
    covered = {s.name for r in alerts for s in selectors(str(r["expr"]))}
    # The daemon's own health: no collection, digest not sent, store errors, job failure streaks.
    assert {"spendwatch_job_last_success_timestamp_seconds", "spendwatch_digest_last_sent_timestamp_seconds",
            "spendwatch_up", "spendwatch_job_consecutive_failures"} <= covered  # fmt: skip
