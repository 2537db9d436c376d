"""spendwatch doctor on Kubernetes: SelfSubjectAccessReviews through the real client, answered by the API double
from the shipped ClusterRoles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("kubernetes", reason="pip install -e '.[dev]' brings the kubernetes extra")

from spendwatch.config import Config
from spendwatch.doctor import run_doctor
from spendwatch.doctor.k8s import parse_rule
from spendwatch.killswitch.k8s import rbac_rules
from tests.doubles.kubernetes_api import KubernetesApi
from tests.killswitch.conftest import k8s_rbac_rules


def _config(tmp_path: Path, endpoint: str, rules: list[dict[str, Any]] | None = None, **source: Any) -> Config:
    cluster = {"auth": "none", "server": endpoint, "provider": "aws", "account": "678901234567"}
    return Config.model_validate(
        {
            "store": {"path": str(tmp_path / "sw.duckdb")},
            "sources": [{"name": "k8s", "type": "kubernetes-jobs", "clusters": {"eks": cluster}, **source}],
            "killswitch": {
                "rules": rules or [],
                "approvers": ["lead"],
                "kubernetes": {"clusters": {"eks": cluster, "demo": {"auth": "none", "provider": "aws"}}},
            },
        }
    )


SUSPEND = {"name": "suspend-gpu", "when": {"incident": {}}, "do": "suspend",
           "resource_types": ["k8s-job", "k8s-raycluster"], "how": "enforce"}  # fmt: skip
DRAIN = {"name": "drain", "when": {"incident": {}}, "do": "scale-to-zero", "resource_types": ["k8s-deployment"],
         "how": "dry-run"}  # fmt: skip


def test_rules_are_read_as_rbac_writes_them() -> None:
    assert parse_rule("apps/deployments/scale:patch") == ("apps", "deployments", "scale", "patch")
    assert parse_rule("pods:delete") == ("", "pods", "", "delete")
    assert parse_rule("ray.io/rayclusters:get") == ("ray.io", "rayclusters", "", "get")
    assert {parse_rule(r)[3] for r in rbac_rules()} <= {"get", "patch", "delete"}


def test_the_shipped_roles_pass(kube_api: KubernetesApi, tmp_path: Path, clock: Any) -> None:
    kube_api.allow = k8s_rbac_rules("spendwatch-collector", "spendwatch-killswitch")
    report = run_doctor(_config(tmp_path, kube_api.endpoint, [SUSPEND, DRAIN]), clock)
    [source] = [f for f in report.findings if f.check == "source"]
    assert (source.status, source.subject) == ("ok", "k8s (kubernetes-jobs) cluster eks")
    assert source.message == "may list 7 kind(s) across all namespaces"
    kill = {f.subject: f for f in report.findings if f.check == "killswitch"}
    assert kill["kubernetes cluster eks"].status == "ok"
    assert kill["kubernetes cluster demo"].status == "skip"  # only named: nothing can act there
    reviews = kube_api.calls("POST", "/selfsubjectaccessreviews")
    assert reviews and not kube_api.calls("PATCH") and not kube_api.calls("GET")  # asked, never touched


def test_a_missing_permission_fails_for_an_acting_rule_and_warns_for_a_dry_run_one(
    kube_api: KubernetesApi, tmp_path: Path, clock: Any
) -> None:
    kube_api.allow = k8s_rbac_rules("spendwatch-collector", "spendwatch-killswitch") - {
        "ray.io/rayclusters:patch", "apps/deployments/scale:patch", "ray.io/rayjobs:list",
    }  # fmt: skip
    report = run_doctor(_config(tmp_path, kube_api.endpoint, [SUSPEND, DRAIN]), clock)
    [source] = [f for f in report.findings if f.check == "source"]
    assert source.status == "fail" and source.message == "cannot list across namespaces: ray.io/rayjobs:list"
    assert source.fix is not None and "rbac-collector.yaml" in source.fix
    kill = [f for f in report.findings if f.check == "killswitch" and f.subject == "kubernetes cluster eks"]
    assert [(f.status, f.message) for f in kill] == [
        ("fail", "missing ray.io/rayclusters:patch (rule suspend-gpu)"),
        ("warn", "missing (dry-run rules cannot act, undo would fail) apps/deployments/scale:patch (rule drain)"),
    ]
    assert not report.ok


def test_an_unreachable_cluster_is_one_failing_line(tmp_path: Path, clock: Any) -> None:
    report = run_doctor(_config(tmp_path, "http://127.0.0.1:9", [SUSPEND]), clock)
    failing = [f for f in report.findings if f.status == "fail"]
    assert {f.check for f in failing} == {"source", "killswitch"}
    assert all("\n" not in f.message and "cannot reach the API server" in f.message for f in failing)
