"""Fixtures for kill-switch tests."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from spendwatch.store import Store
from tests.doubles.clock import FixedClock
from tests.killswitch.factories import NOW, REGION, new_store


@pytest.fixture
def ks_clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def store(tmp_path: Path, ks_clock: FixedClock) -> Store:
    return new_store(tmp_path, ks_clock)


@pytest.fixture
def aws(moto_server: Any) -> Any:
    """boto3 clients on the moto server: ``aws("ec2")``."""
    import boto3

    session = boto3.Session(region_name=REGION)

    def make(service: str) -> Any:
        return session.client(service, endpoint_url=moto_server.endpoint_url, region_name=REGION)

    make.endpoint_url = moto_server.endpoint_url  # type: ignore[attr-defined]
    return make


# -- permission audit: every cloud call an action makes is declared and allowed by the shipped policy --

REPO = Path(__file__).resolve().parents[2]
_ACTING: ContextVar[type | None] = ContextVar("acting", default=None)


def aws_policy_actions() -> set[str]:
    policy = json.loads((REPO / "deploy/aws/killswitch-policy.json").read_text())
    return {a for s in policy["Statement"] if s["Effect"] == "Allow" for a in s["Action"]}


def gcp_role_permissions() -> set[str]:
    return set(yaml.safe_load((REPO / "deploy/gcp/killswitch-role.yaml").read_text())["includedPermissions"])


@dataclass
class PermissionAudit:
    aws_calls: list[tuple[type, str]] = field(default_factory=list)
    acted: set[type] = field(default_factory=set)


def _wrap(function: Any) -> Any:
    @functools.wraps(function)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        token = _ACTING.set(type(self))
        _AUDIT_NOW[0].acted.add(type(self)) if _AUDIT_NOW else None
        try:
            return function(self, *args, **kwargs)
        finally:
            _ACTING.reset(token)

    return wrapper


_AUDIT_NOW: list[PermissionAudit] = []


@pytest.fixture(autouse=True)
def permission_audit(monkeypatch: pytest.MonkeyPatch) -> Iterator[PermissionAudit]:
    """Record which action made each AWS call; after the test, check it against declarations and policy."""
    from botocore.client import BaseClient

    from spendwatch.killswitch.base import ACTIONS, Action
    from spendwatch.killswitch.hook import HookAction

    audit = PermissionAudit()
    _AUDIT_NOW[:] = [audit]
    seen: set[tuple[type, str]] = set()
    for klass in [c for _, cls in ACTIONS.items() for c in cls.__mro__] + [HookAction]:
        if not (isinstance(klass, type) and issubclass(klass, Action)) or klass is Action:
            continue
        for method in ("describe", "execute", "undo", "dry_run"):
            if method in klass.__dict__ and (klass, method) not in seen:
                seen.add((klass, method))
                monkeypatch.setattr(klass, method, _wrap(klass.__dict__[method]))
    original = BaseClient._make_api_call

    def recording(self: Any, operation_name: str, api_params: Any) -> Any:
        acting = _ACTING.get()
        if acting is not None:
            audit.aws_calls.append((acting, f"{self.meta.service_model.signing_name}:{operation_name}"))
        return original(self, operation_name, api_params)

    monkeypatch.setattr(BaseClient, "_make_api_call", recording)
    yield audit
    _AUDIT_NOW.clear()
    allowed = aws_policy_actions()
    for acting, permission in audit.aws_calls:
        declared = set(acting.permissions) | set(acting.undo_permissions)
        assert permission in declared, f"{acting.__name__} called {permission} without declaring it"
        assert permission in allowed, f"{permission} ({acting.__name__}) is not in deploy/aws/killswitch-policy.json"


from tests.doubles.kubernetes_api import kube_api  # noqa: E402, F401  (fixture: the Kubernetes API server double)

REPO_ROOT = Path(__file__).resolve().parents[2]


def k8s_rbac_rules(*names: str) -> set[str]:
    """``group/resource:verb`` of every rule of the named ClusterRoles in deploy/kubernetes (all when none named)."""
    found: set[str] = set()
    for path in sorted((REPO_ROOT / "deploy" / "kubernetes").glob("rbac-*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc["kind"] != "ClusterRole" or (names and doc["metadata"]["name"] not in names):
                continue
            for item in doc["rules"]:
                for group in item["apiGroups"]:
                    for resource in item["resources"]:
                        for verb in item["verbs"]:
                            found.add(f"{group}/{resource}:{verb}" if group else f"{resource}:{verb}")
    return found
