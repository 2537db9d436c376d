"""Hole 1: a tag naming someone else's job must not steer attribution or the kill switch out of scope.

An engineer in account 444444444444 tags their own SageMaker spend ``job=<a training job of another
account>``. Attribution used to link that job (``OR job_id IN (…)`` without the provider, account and
window filters), so a rule scoped to 444444444444 planned to stop the other account's job and the
digest blamed its owner.
"""

from __future__ import annotations

import fnmatch
import tempfile
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from spendwatch.config import parse_config
from spendwatch.detect.incidents import load_incidents
from spendwatch.detect.runner import run_detection
from spendwatch.killswitch.engine import run_killswitch
from spendwatch.killswitch.journal import list_actions
from spendwatch.killswitch.rules import match_rule
from spendwatch.killswitch.scope import scope_problem
from spendwatch.store import Store
from spendwatch.store.records import Contributor, Incident, JobLink
from spendwatch.store.schema import JOB_SCHEMA
from tests.doubles.clock import FixedClock
from tests.doubles.lines import cost_lines

START = datetime(2026, 8, 1, tzinfo=UTC)
DAYS = 60
NOW = START + timedelta(days=DAYS, hours=3)
ATTACKER = "444444444444"
VICTIM = "210987654321"
SAGEMAKER = "Amazon SageMaker"


def _config(tmp_path: Path) -> Any:
    text = (
        "store: {path: s.duckdb}\n"
        "sources:\n  - {name: bills, type: focus, path: unused, settle_lag: 2h}\n"
        "monitors:\n  - {name: svc, dimensions: [provider, sub_account_id, service_name], granularity: [daily]}\n"
        "killswitch:\n  rules:\n"
        "    - name: stop-444\n"
        f"      when: {{incident: {{dimensions: {{sub_account_id: ['{ATTACKER}']}}}}}}\n"
        "      do: stop\n      how: dry-run\n"
    )
    return parse_config(text, tmp_path / "sw.yaml", environ={})


def _spend(store: Store, job_id: str, account: str = ATTACKER) -> None:
    rng = np.random.default_rng(3)
    last = START + timedelta(days=DAYS - 1)
    # First: pyarrow's from_pylist takes its columns from the first row.
    rows: list[dict[str, Any]] = [
        {"start": last, "cost": 5000.0, "sub_account_id": account, "service_name": SAGEMAKER, "job_id": job_id}
    ]
    for day in range(DAYS):
        cost = 300.0 * float(np.exp(rng.normal(0, 0.03)))
        rows.append({"start": START + timedelta(days=day), "cost": cost, "sub_account_id": account,
                     "service_name": SAGEMAKER})  # fmt: skip
    store.replace_cost_lines("bills", START, START + timedelta(days=DAYS), cost_lines(rows))


def _job(job_id: str, account: str, owner: str) -> dict[str, Any]:
    return {
        "platform": "sagemaker",
        "job_id": job_id,
        "provider": "aws",
        "sub_account_id": account,
        "region_id": "us-east-1",
        "name": job_id,
        "user": owner,
        "owner": owner,
        "state": "RUNNING",
        "start_time": START + timedelta(days=DAYS - 2),
        "estimated_cost": 9000.0,
        "billing_currency": "USD",
        "resource_id": f"arn:aws:sagemaker:us-east-1:{account}:training-job/{job_id}",
    }


def _jobs(store: Store, *jobs: dict[str, Any]) -> None:
    table = pa.Table.from_pylist(list(jobs), schema=pa.schema([JOB_SCHEMA.field(c) for c in jobs[0]]))
    store.upsert_jobs("aws-jobs", table)


def test_a_tag_naming_another_accounts_job_links_nothing(tmp_path: Path) -> None:
    clock = FixedClock(NOW)
    cfg = _config(tmp_path)
    store = Store(cfg.store.path, clock=clock)
    _spend(store, "victim-training-job")
    _jobs(store, _job("victim-training-job", VICTIM, "victim@example.com"))
    run_detection(cfg, store, clock)
    [incident] = load_incidents(store)
    assert incident.dimensions["sub_account_id"] == ATTACKER
    assert any(c.dimension == "job_id" and c.value == "victim-training-job" for c in incident.contributors)
    assert incident.jobs == ()  # the other account's job explains nothing here
    assert "victim@example.com" not in incident.culprit_sentence()
    run_killswitch(cfg, store, clock)
    assert [a for a in list_actions(store) if a.target.account != ATTACKER] == []


def test_a_tag_naming_a_job_of_the_same_account_still_links_it(tmp_path: Path) -> None:
    clock = FixedClock(NOW)
    cfg = _config(tmp_path)
    store = Store(cfg.store.path, clock=clock)
    _spend(store, "own-training-job")
    _jobs(
        store,
        _job("own-training-job", ATTACKER, "ana@example.com"),
        _job("other-training-job", VICTIM, "victim@example.com"),
    )
    run_detection(cfg, store, clock)
    [incident] = load_incidents(store)
    assert [j.job_id for j in incident.jobs] == ["own-training-job"]
    assert incident.jobs[0].sub_account_id == ATTACKER


def test_a_named_job_outside_the_window_is_not_linked(tmp_path: Path) -> None:
    clock = FixedClock(NOW)
    cfg = _config(tmp_path)
    store = Store(cfg.store.path, clock=clock)
    _spend(store, "old-training-job")
    old = _job("old-training-job", ATTACKER, "ana@example.com")
    old.update(state="COMPLETED", start_time=START, end_time=START + timedelta(days=1))
    _jobs(store, old)
    run_detection(cfg, store, clock)
    [incident] = load_incidents(store)
    assert incident.jobs == ()


@pytest.mark.parametrize("account", [VICTIM, None])
def test_the_kill_switch_refuses_a_target_outside_the_rules_scope(tmp_path: Path, account: str | None) -> None:
    """Whatever the incident says (a forged or stale job link), a rule scoped to 444… acts only there."""
    from tests.killswitch.factories import incident, rule, settings

    link = JobLink(
        platform="sagemaker", job_id="victim-training-job", provider="aws", sub_account_id=account,
        user="victim@example.com", name="victim-training-job", state="RUNNING", cost=900.0, cost_method=None,
        end_time=None,
        start_time=NOW - timedelta(hours=5), region_id="us-east-1",
        resource_id=f"arn:aws:sagemaker:us-east-1:{account or ''}:training-job/victim-training-job",
    )  # fmt: skip
    spec = rule("stop-444", how="dry-run", when={"incident": {"dimensions": {"sub_account_id": [ATTACKER]}}})
    config = settings([spec])
    store = Store(tmp_path / "s.duckdb", clock=FixedClock(NOW))
    run = run_killswitch(config, store, FixedClock(NOW), incidents=[incident(account=ATTACKER, jobs=(link,))])
    assert run.planned == [] and list_actions(store) == []
    [note] = run.skipped
    assert "outside the rule's scope" in note.reason


# -- property: whatever the incident says, no planned action leaves the rule's scope ---------------

AWS_ACCOUNTS = ["111111111111", "222222222222", "333333333333"]
REGIONS = ["us-east-1", "eu-west-1"]


def _arn(service: str, region: str, account: str, resource: str) -> str:
    return f"arn:aws:{service}:{region}:{account}:{resource}"


RESOURCE_IDS = st.one_of(
    st.sampled_from(["i-0123456789abcdef0", "i-0123456789abcdef1", "j-ABCDEFGH1234"]),
    st.builds(lambda r, a, n: _arn("ec2", r, a, f"instance/i-0aaaaaaaaaaaaaa{n}"),
              st.sampled_from(REGIONS), st.sampled_from(AWS_ACCOUNTS), st.integers(0, 9)),
    st.builds(lambda r, a, n: _arn("sagemaker", r, a, f"training-job/train-{n}"),
              st.sampled_from(REGIONS), st.sampled_from(AWS_ACCOUNTS), st.integers(0, 9)),
)  # fmt: skip


def _link(platform: str, job_id: str, account: str | None, region: str | None, resource: str | None) -> JobLink:
    return JobLink(
        platform=platform, job_id=job_id, provider="aws", sub_account_id=account, user="someone", name=job_id,
        state="RUNNING", cost=100.0, cost_method=None, start_time=NOW - timedelta(hours=2), end_time=None,
        resource_id=resource, region_id=region,
    )  # fmt: skip


LINKS = st.builds(
    _link,
    st.sampled_from(["sagemaker", "athena", "emr", "glue", "batch"]),
    st.sampled_from(["train-1", "q-2", "j-ABCDEFGH0000", "run-4"]),
    st.one_of(st.none(), st.sampled_from(AWS_ACCOUNTS)),
    st.one_of(st.none(), st.sampled_from(REGIONS)),
    st.one_of(st.none(), RESOURCE_IDS),
)
INCIDENTS = st.fixed_dictionaries(
    {
        "account": st.one_of(st.none(), st.sampled_from(AWS_ACCOUNTS)),
        "region": st.one_of(st.none(), st.sampled_from(REGIONS)),
        "resources": st.lists(RESOURCE_IDS, max_size=4),
        "accounts": st.lists(st.sampled_from(AWS_ACCOUNTS), max_size=2, unique=True),
        "links": st.lists(LINKS, max_size=4),
    }
)
SCOPES = st.fixed_dictionaries(
    {},
    optional={
        "sub_account_id": st.lists(st.sampled_from([*AWS_ACCOUNTS, "1*", "*"]), min_size=1, max_size=2),
        "provider": st.sampled_from([["aws"], ["gcp"], ["a*"]]),
        "region_id": st.lists(st.sampled_from([*REGIONS, "us-*"]), min_size=1, max_size=2),
    },
)


def _random_incident(spec: dict[str, Any]) -> Incident:
    dims = {"provider": "aws"}
    if spec["account"]:
        dims["sub_account_id"] = spec["account"]
    if spec["region"]:
        dims["region_id"] = spec["region"]
    found = [Contributor("resource_id", r, 50.0, 0.2, 50.0, 0.0) for r in spec["resources"]]
    if not spec["account"]:
        found += [Contributor("sub_account_id", a, 50.0, 0.2, 50.0, 0.0) for a in spec["accounts"]]
    return Incident(
        id=7, monitor="m", granularity="daily", series_key="|".join(dims.values()), dimensions=dims,
        billing_currency="USD", kind="spike", status="open", severity="high",
        first_seen=NOW - timedelta(days=1), last_seen=NOW - timedelta(days=1), resolved_at=None,
        peak_at=NOW - timedelta(days=1), peak_actual=600.0, peak_expected=100.0, peak_score=9.0,
        actual_total=600.0, expected_total=100.0, impact=500.0, impact_pct=5.0,
        contributors=tuple(found), jobs=tuple(spec["links"]),
    )  # fmt: skip


def _inside(scope: dict[str, list[str]], incident: Incident, target: Any) -> bool:
    """The oracle, written apart from the engine: the rule's globs and the incident's own scope."""
    checks = {"provider": target.provider, "sub_account_id": target.account, "region_id": target.region}
    for dimension, patterns in scope.items():
        value = checks[dimension]
        if value is None or not any(fnmatch.fnmatchcase(value, p) for p in patterns):
            return False
    own = incident.dimensions.get("sub_account_id")
    return own is None or target.account == own


@hyp_settings(max_examples=60, deadline=None)
@given(spec=INCIDENTS, scope=SCOPES, do=st.sampled_from(["hook", "stop", "cancel", "terminate"]))
def test_no_planned_action_leaves_the_rules_scope(spec: dict[str, Any], scope: dict[str, list[str]], do: str) -> None:
    from tests.killswitch.factories import rule, settings

    incident = _random_incident(spec)
    extra: dict[str, Any] = {"hook": {"command": ["/bin/true"]}} if do == "hook" else {}
    spec_rule = rule("r", do=do, how="dry-run", when={"incident": {"dimensions": scope}}, max_targets=100, **extra)
    config = settings([spec_rule])
    clock = FixedClock(NOW)
    # Matching alone, for every verb: what would be planned is what the scope check lets through.
    for match in match_rule(config.rules[0], [incident], [], NOW):
        if scope_problem(match.rule, match.target, match.context) is None:
            assert _inside(scope, incident, match.target), match.target
    if do != "hook":
        return  # acting verbs would re-read a cloud; the hook's dry-run re-reads nothing
    with tempfile.TemporaryDirectory() as folder:
        store = Store(Path(folder) / "s.duckdb", clock=clock)
        run = run_killswitch(config, store, clock, incidents=[incident])
        planned = list_actions(store)
    assert len(planned) == len(run.planned)
    for action in planned:
        assert _inside(scope, incident, action.target), action.target


def test_a_kubernetes_workload_is_scoped_by_where_its_configured_cluster_runs() -> None:
    """A workload's own coordinates are a cluster and a namespace; its cloud ones come only from the config."""
    from spendwatch.k8s_client import KubernetesConnection
    from tests.killswitch.factories import incident, rule, settings

    def link(account: str) -> JobLink:
        return JobLink(
            platform="kubernetes", job_id="k8s://eks-ml/research/Job/train", provider="aws", sub_account_id=account,
            user="ana", name="train", state="RUNNING", cost=500.0, cost_method=None,
            start_time=NOW - timedelta(hours=2), end_time=None, resource_id="k8s://eks-ml/research/Job/train",
        )  # fmt: skip

    def problems(
        scope: dict[str, list[str]], account: str, cluster_account: str = ATTACKER, **dims: str
    ) -> list[str | None]:
        config = settings([rule("r", do="suspend", how="dry-run", when={"incident": {"dimensions": scope}})])
        found = incident(account=ATTACKER, jobs=(link(account),))
        found = replace(found, dimensions={**found.dimensions, **dims})
        matches = match_rule(config.rules[0], [found], [], NOW)
        assert [m.target.resource_type for m in matches] == ["k8s-job"]
        clusters = {"eks-ml": KubernetesConnection(auth="none", provider="aws", account=cluster_account)}
        return [scope_problem(m.rule, m.target, m.context, clusters=clusters) for m in matches]

    assert problems({"sub_account_id": [ATTACKER]}, ATTACKER) == [None]
    in_cluster = {"cluster": "eks-ml", "namespace": "research"}
    assert problems({"cluster": ["eks-*"], "namespace": ["research"]}, ATTACKER, **in_cluster) == [None]
    # The record's claim does not matter: the cluster is configured in the victim's account.
    [outside] = problems({}, ATTACKER, cluster_account=VICTIM)
    assert outside is not None and f"account/project {VICTIM} is not incident #1's {ATTACKER}" in outside
    [other] = problems({"namespace": ["research"]}, ATTACKER, cluster="eks-ml", namespace="research", owner="x")
    assert other is None
    [elsewhere] = problems({}, ATTACKER, cluster="gke-research")  # the incident is another cluster's
    assert elsewhere is not None and "cluster eks-ml is not incident #1's gke-research" in elsewhere
