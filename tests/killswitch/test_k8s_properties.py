"""The kill switch's properties hold for Kubernetes targets (hypothesis; the real client and the API double).

* scope: whatever an incident's job links name, a planned action's workload runs in a cluster
  ``killswitch.kubernetes.clusters`` places inside the incident's account and inside the rule's
  provider/account/region/cluster/namespace globs (the oracle is written apart from the engine);
* protection: a workload whose labels (in any spelling, on the record or only on the live object), namespace or
  cluster protect it is never changed;
* dry-run changes nothing; the caps hold; undo after enforce restores every prior state.
"""

from __future__ import annotations

import fnmatch
import tempfile
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

pytest.importorskip("kubernetes", reason="pip install -e '.[dev]' brings the kubernetes extra")

from spendwatch.killswitch.config import Protection
from spendwatch.killswitch.engine import KillSwitch
from spendwatch.killswitch.journal import list_actions
from spendwatch.killswitch.rules import match_rule
from spendwatch.killswitch.safety import protecting_tag
from spendwatch.killswitch.scope import scope_problem
from spendwatch.store.records import JobLink
from tests.doubles.clock import FixedClock
from tests.doubles.kubernetes_api import KubernetesApi, deployment, job, ray_cluster
from tests.killswitch.conftest import k8s_rbac_rules
from tests.killswitch.factories import NOW, incident, new_store, rule, settings

ACCOUNTS = ["111111111111", "222222222222"]
# Where each cluster runs, as the config says ("dark" is named in records but configured nowhere).
PLACES = {
    "eks-a": {"provider": "aws", "account": ACCOUNTS[0], "region": "us-west-2"},
    "eks-b": {"provider": "aws", "account": ACCOUNTS[1], "region": "eu-west-1"},
    "gke-a": {"provider": "gcp", "account": "proj-a", "region": "us-central1"},
}
CLUSTERS = [*PLACES, "dark"]
NAMESPACES = ["research", "serving", "kube-system", "prod-payments"]
KINDS = ["Job", "RayCluster", "Deployment"]


def _link(cluster: str, namespace: str, kind: str, name: str, labels: dict[str, str] | None = None) -> JobLink:
    uri = f"k8s://{cluster}/{namespace}/{kind}/{name}"
    return JobLink(
        platform="kubernetes", job_id=uri, provider="aws", sub_account_id=ACCOUNTS[0], user="someone", name=name,
        state="RUNNING", cost=400.0, cost_method=None, start_time=NOW - timedelta(hours=2), end_time=None,
        resource_id=uri, region_id="us-west-2", labels=labels or {},
    )  # fmt: skip


# -- scope -----------------------------------------------------------------------------------------

LINKS = st.builds(
    _link, st.sampled_from(CLUSTERS), st.sampled_from(NAMESPACES), st.sampled_from(KINDS), st.sampled_from(["a", "b"])
)
SCOPES = st.fixed_dictionaries(
    {},
    optional={
        "provider": st.sampled_from([["aws"], ["gcp"], ["kubernetes"]]),
        "sub_account_id": st.lists(st.sampled_from([*ACCOUNTS, "1*", "proj-*"]), min_size=1, max_size=2),
        "region_id": st.lists(st.sampled_from(["us-*", "eu-west-1", "us-central1"]), min_size=1, max_size=2),
        "cluster": st.lists(st.sampled_from(["eks-*", "gke-a", "dark"]), min_size=1, max_size=2),
        "namespace": st.lists(st.sampled_from(["research", "serv*"]), min_size=1, max_size=2),
    },
)
INCIDENTS = st.fixed_dictionaries(
    {
        "provider": st.sampled_from(["aws", "gcp"]),
        "account": st.one_of(st.none(), st.sampled_from([*ACCOUNTS, "proj-a"])),
        "cluster": st.one_of(st.none(), st.sampled_from(CLUSTERS)),
        "links": st.lists(LINKS, min_size=1, max_size=5),
    }
)


def _fits(value: str | None, patterns: list[str]) -> bool:
    return value is not None and any(fnmatch.fnmatchcase(value.lower(), p.lower()) for p in patterns)


def _inside(scope: dict[str, list[str]], dims: dict[str, str], target: Any) -> bool:
    """The oracle: the cluster's configured place fits the rule's globs and the incident's own dimensions."""
    place = PLACES.get(target.account) or {"provider": None, "account": None, "region": None}
    where = {"provider": place["provider"], "sub_account_id": place["account"], "region_id": place["region"],
             "cluster": target.account, "namespace": target.region}  # fmt: skip
    if any(not _fits(where[k], patterns) for k, patterns in scope.items()):
        return False
    return all(dims.get(k) in (None, where[k]) for k in ("provider", "sub_account_id", "cluster"))


@hyp_settings(max_examples=150, deadline=None)
@given(spec=INCIDENTS, scope=SCOPES)
def test_no_kubernetes_action_is_planned_outside_the_incidents_or_the_rules_scope(
    spec: dict[str, Any], scope: dict[str, list[str]]
) -> None:
    found = incident(provider=spec["provider"], account=spec["account"] or "", jobs=tuple(spec["links"]))
    dims = {k: v for k, v in found.dimensions.items() if v}
    if spec["cluster"]:
        dims["cluster"] = spec["cluster"]
    found = replace(found, dimensions=dims)
    config = settings(
        [rule("r", do="suspend", how="dry-run", when={"incident": {"dimensions": scope}}, max_targets=100)],
        kubernetes={"clusters": {name: {**place, "auth": "none"} for name, place in PLACES.items()}},
    )
    for match in match_rule(config.rules[0], [found], [], NOW):
        allowed = scope_problem(match.rule, match.target, match.context, clusters=config.kubernetes.clusters) is None
        assert allowed == _inside(scope, dims, match.target), (match.target, scope, dims)


# -- protection, dry-run, caps and undo against the API double -----------------------------------------

LABELS = st.sampled_from(
    [
        {},
        {"owner": "ana"},
        {"spendwatch-protect": "true"},
        {"spendwatch-protect": "TRUE"},
        {"spendwatch-protect": "false"},
        {"env": "prod"},
        {"Environment": "Production", "environment": "dev"},
        {"team": "ml", "env": "dev"},
    ]
)
WORKLOADS = st.lists(
    st.tuples(
        st.sampled_from(KINDS), st.sampled_from(NAMESPACES), LABELS, st.sampled_from(["record", "object", "both"])
    ),
    min_size=1,
    max_size=5,
)
CHOICES = st.fixed_dictionaries(
    {
        "how": st.sampled_from(["dry-run", "approve", "enforce"]),
        "per_run": st.integers(0, 4),
        "per_hour": st.integers(0, 6),
        "protect_clusters": st.sampled_from([[], ["eks-a"], ["gke-*"]]),
    }
)
SLOW = hyp_settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
WHERE = {"Job": ("batch", "jobs"), "RayCluster": ("ray.io", "rayclusters"), "Deployment": ("apps", "deployments")}


def _object(kind: str, namespace: str, name: str, labels: dict[str, str]) -> dict[str, Any]:
    if kind == "Job":
        return job(namespace, name, gpus=8, labels=labels)
    if kind == "RayCluster":
        return ray_cluster(namespace, name, labels=labels)
    return deployment(namespace, name, replicas=3, labels=labels)


def _state(api: KubernetesApi, kind: str, namespace: str, name: str) -> Any:
    obj = api.get(*WHERE[kind], namespace, name)
    assert obj is not None
    spec = obj.get("spec") or {}
    return spec.get("replicas") if kind == "Deployment" else bool(spec.get("suspend"))


def _protected(namespace: str, labels: dict[str, str], cluster: str, protect_clusters: list[str]) -> bool:
    protection = Protection(clusters=protect_clusters, namespaces=["kube-system", "prod-*"])
    return (
        protecting_tag(protection, labels) is not None
        or namespace in ("kube-system", "prod-payments")
        or any(fnmatch.fnmatchcase(cluster, p) for p in protect_clusters)
    )


@SLOW
@given(workloads=WORKLOADS, choice=CHOICES)
def test_protection_dry_run_caps_and_undo_hold_for_kubernetes_workloads(
    workloads: list[tuple[str, str, dict[str, str], str]], choice: dict[str, Any]
) -> None:
    api = KubernetesApi().start()
    try:
        _check(api, workloads, choice)
    finally:
        api.stop()


def _check(api: KubernetesApi, workloads: list[tuple[str, str, dict[str, str], str]], choice: dict[str, Any]) -> None:
    api.allow = k8s_rbac_rules("spendwatch-killswitch")
    links, names = [], []
    for n, (kind, namespace, labels, where) in enumerate(workloads):
        name = f"w{n}"
        api.add(_object(kind, namespace, name, labels if where != "record" else {}))
        links.append(_link("eks-a", namespace, kind, name, labels if where != "object" else {}))
        names.append((kind, namespace, name, labels))
    before = {(k, ns, n): _state(api, k, ns, n) for k, ns, n, _ in names}
    rules = [rule("suspend", do="suspend", how=choice["how"]), rule("drain", do="scale-to-zero", how=choice["how"])]
    config = settings(
        rules,
        kubernetes={"clusters": {"eks-a": {**PLACES["eks-a"], "auth": "none", "server": api.endpoint}}},
        caps={"max_actions_per_run": choice["per_run"], "max_actions_per_hour": choice["per_hour"]},
        protection={"clusters": choice["protect_clusters"], "namespaces": ["kube-system", "prod-*"]},
    )
    clock = FixedClock(NOW)
    with tempfile.TemporaryDirectory() as folder:
        store = new_store(Path(folder), clock)
        engine = KillSwitch(config, store, clock)
        run = engine.run(incidents=[incident(account=ACCOUNTS[0], region="us-west-2", jobs=tuple(links))], jobs=[])
        after = {(k, ns, n): _state(api, k, ns, n) for k, ns, n, _ in names}
        acted = [a for a in list_actions(store) if a.state in ("running", "done", "failed")]

        for kind, namespace, name, labels in names:
            if _protected(namespace, labels, "eks-a", choice["protect_clusters"]):
                assert after[(kind, namespace, name)] == before[(kind, namespace, name)], (kind, namespace, labels)
        if choice["how"] != "enforce":
            assert after == before  # dry-run and approval change nothing
        assert len(run.executed) <= min(choice["per_run"], choice["per_hour"])
        assert len(acted) <= min(choice["per_run"], choice["per_hour"])
        for action in run.executed:
            engine.undo(action.id, actor="ana")
        assert {(k, ns, n): _state(api, k, ns, n) for k, ns, n, _ in names} == before
