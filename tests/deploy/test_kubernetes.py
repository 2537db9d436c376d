"""deploy/kubernetes: valid API objects, the restricted Pod Security Standard, and a coherent whole."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from spendwatch.config import parse_config
from tests.deploy import pss
from tests.deploy.kustomize import KustomizeError, load_documents, render

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install -e '.[dev]' brings it")

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "kubernetes"
# The oldest Kubernetes minor still in EKS/GKE extended support, and the newest schemas shipped.
VERSIONS = ["1.28.0", "1.37.0"]
# Not in the core API schemas: test_service_monitor_scrapes_the_service, tests/deploy/test_observability.py.
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}


def _manifests() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        found += [(path.name, doc) for doc in load_documents(path) if doc["kind"] not in CRD_KINDS]
    return found


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in render(K8S)}


# -- schemas -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("name", "manifest"), _manifests(), ids=lambda v: v if isinstance(v, str) else v["kind"])
def test_every_manifest_validates_against_the_kubernetes_api_schemas(
    version: str, name: str, manifest: dict[str, Any]
) -> None:
    kubernetes_validate.validate(manifest, version, strict=True)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["spec"].__setitem__("replicas", "one"), "is not of type 'integer'"),
        (lambda d: d["spec"]["template"]["spec"]["containers"][0].__setitem__("livenesProbe", {}), "livenesProbe"),
        (lambda d: d["spec"]["strategy"].__setitem__("rollingUpdate", {"maxSurge": []}), "maxSurge"),
    ],
)
def test_schema_validation_rejects_a_broken_deployment(mutate: Any, message: str) -> None:
    deployment = copy.deepcopy(yaml.safe_load((K8S / "deployment.yaml").read_text()))
    mutate(deployment)
    with pytest.raises(kubernetes_validate.ValidationError, match=message):
        kubernetes_validate.validate(deployment, VERSIONS[-1], strict=True)


# -- pod security ---------------------------------------------------------------------------------------


def test_the_deployment_satisfies_the_restricted_pod_security_standard(rendered: dict[str, Any]) -> None:
    spec = pss.pod_spec_of(rendered["Deployment"])
    assert spec is not None
    assert pss.violations(spec) == []


def test_the_namespace_enforces_restricted(rendered: dict[str, Any]) -> None:
    labels = rendered["Namespace"]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def _pod() -> dict[str, Any]:
    spec = pss.pod_spec_of(yaml.safe_load((K8S / "deployment.yaml").read_text()))
    assert spec is not None
    return copy.deepcopy(spec)


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = pod["containers"][0]
    return container


@pytest.mark.parametrize(
    ("mutate", "control"),
    [
        (lambda p: p.__setitem__("hostNetwork", True), "host namespaces"),
        (lambda p: p["volumes"].append({"name": "h", "hostPath": {"path": "/"}}), "hostPath"),
        (lambda p: p["volumes"].append({"name": "n", "nfs": {"server": "x", "path": "/"}}), "volume types"),
        (lambda p: _container(p)["securityContext"].__setitem__("privileged", True), "privileged"),
        (lambda p: _container(p)["securityContext"].__setitem__("allowPrivilegeEscalation", True), "escalation"),
        (lambda p: _container(p)["securityContext"].pop("allowPrivilegeEscalation"), "escalation"),
        (lambda p: _container(p)["securityContext"].__setitem__("runAsNonRoot", False), "non-root"),
        (lambda p: _container(p)["securityContext"].__setitem__("runAsUser", 0), "non-root user"),
        (lambda p: _container(p)["securityContext"]["capabilities"].__setitem__("drop", ["NET_RAW"]), "drop ALL"),
        (lambda p: _container(p)["securityContext"]["capabilities"].__setitem__("add", ["SYS_ADMIN"]), "capabilities"),
        (lambda p: _container(p)["securityContext"]["seccompProfile"].__setitem__("type", "Unconfined"), "seccomp"),
        (lambda p: _container(p)["ports"][0].__setitem__("hostPort", 9464), "host ports"),
        (lambda p: p["securityContext"].__setitem__("sysctls", [{"name": "kernel.msgmax", "value": "1"}]), "sysctls"),
    ],
)
def test_the_pod_security_checks_catch_each_violation(mutate: Any, control: str) -> None:
    pod = _pod()
    mutate(pod)
    found = pss.violations(pod)
    assert any(control in line for line in found), found


def test_seccomp_and_non_root_may_come_from_the_pod_level_alone() -> None:
    pod = _pod()
    context = _container(pod)["securityContext"]
    context.pop("seccompProfile")
    context.pop("runAsNonRoot")
    assert pss.violations(pod) == []
    pod["securityContext"].pop("seccompProfile")
    assert any("seccomp" in v for v in pss.violations(pod))


# -- kustomize -------------------------------------------------------------------------------------------


def test_the_kustomization_renders_every_default_resource(rendered: dict[str, Any]) -> None:
    assert set(rendered) == {
        "Namespace", "ServiceAccount", "ConfigMap", "PersistentVolumeClaim", "Deployment", "Service", "NetworkPolicy",
    }  # fmt: skip
    for kind, resource in rendered.items():
        if kind != "Namespace":
            assert resource["metadata"]["namespace"] == "spendwatch", kind
    image = rendered["Deployment"]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "registry.example.com/platform/spendwatch:0.1.0"


def test_optional_and_example_files_stay_out_of_the_default_kustomization() -> None:
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert "servicemonitor.yaml" not in listed and "prometheusrule.yaml" not in listed  # need the operator's CRDs
    assert "secret.example.yaml" not in listed  # applying it would overwrite the real secret


def test_the_renderer_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("kind: Kustomization\nconfigMapGenerator: []\n")
    with pytest.raises(KustomizeError, match="does not support"):
        render(tmp_path)
    (tmp_path / "kustomization.yaml").write_text("kind: Kustomization\nresources: [missing.yaml]\n")
    with pytest.raises(KustomizeError, match=r"missing\.yaml does not exist"):
        render(tmp_path)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed (the renderer is used alone)")
def test_the_renderer_agrees_with_kubectl_kustomize(rendered: dict[str, Any]) -> None:
    kubectl = shutil.which("kubectl")
    assert kubectl is not None
    result = subprocess.run([kubectl, "kustomize", str(K8S)], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    theirs = {doc["kind"]: doc for doc in yaml.safe_load_all(result.stdout) if doc}
    assert theirs == rendered


# -- the pieces fit together -------------------------------------------------------------------------------


def _config_text(rendered: dict[str, Any]) -> str:
    text: str = rendered["ConfigMap"]["data"]["spendwatch.yaml"]
    return text


def test_the_deployment_runs_one_daemon_per_store(rendered: dict[str, Any]) -> None:
    spec = rendered["Deployment"]["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    assert rendered["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_probes_port_and_config_agree(rendered: dict[str, Any]) -> None:
    pod = rendered["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    config_path = Path(container["args"][container["args"].index("--config") + 1])
    assert mounts[str(config_path.parent)]["readOnly"] is True
    secrets = {"SMTP_PASSWORD": "x", "SLACK_WEBHOOK_URL": "https://hooks.example.com/x"}
    config = parse_config(_config_text(rendered), config_path, environ=secrets)
    assert config.daemon.health.port == ports["metrics"]
    assert config.daemon.health.bind == "0.0.0.0"  # the kubelet probes the pod IP
    volumes = {v["name"]: v for v in pod["volumes"]}
    data_mount = next(m for m in container["volumeMounts"] if m["name"] == "data")
    assert config.store.path.parent == Path(data_mount["mountPath"])
    assert (
        volumes["data"]["persistentVolumeClaim"]["claimName"] == rendered["PersistentVolumeClaim"]["metadata"]["name"]
    )
    assert volumes["config"]["configMap"]["name"] == rendered["ConfigMap"]["metadata"]["name"]
    assert "emptyDir" in volumes[next(m["name"] for m in container["volumeMounts"] if m["mountPath"] == "/tmp")]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    for key in ("cpu", "memory"):
        assert key in container["resources"]["requests"]
        assert key in container["resources"]["limits"]


def test_the_secrets_the_config_needs_come_from_the_secret(rendered: dict[str, Any]) -> None:
    import re

    container = rendered["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    from_secret = {
        e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})
    }
    needed = set(re.findall(r"\$\{([A-Z_]+)\}", _config_text(rendered)))
    assert needed <= set(from_secret)
    example = yaml.safe_load((K8S / "secret.example.yaml").read_text())
    for ref in from_secret.values():
        assert ref["name"] == example["metadata"]["name"]
        assert ref["key"] in example["stringData"]


def test_the_service_account_carries_both_workload_identity_annotations(rendered: dict[str, Any]) -> None:
    account = rendered["ServiceAccount"]
    annotations = account["metadata"]["annotations"]
    assert annotations["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    assert annotations["iam.gke.io/gcp-service-account"].endswith(".iam.gserviceaccount.com")
    pod = rendered["Deployment"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert pod["automountServiceAccountToken"] is False


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_the_service_exposes_metrics_with_scrape_annotations(rendered: dict[str, Any]) -> None:
    service = rendered["Service"]
    pod_labels = rendered["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert _selects(service["spec"]["selector"], pod_labels)
    [port] = service["spec"]["ports"]
    assert port["targetPort"] == "metrics"
    annotations = service["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert annotations["prometheus.io/port"] == str(port["port"])


def test_service_monitor_scrapes_the_service(rendered: dict[str, Any]) -> None:
    [monitor] = load_documents(K8S / "servicemonitor.yaml")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    service = rendered["Service"]
    assert _selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [service["metadata"]["namespace"]]
    port_names = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in port_names
        assert endpoint["path"] == "/metrics"
    assert set(monitor["spec"]) <= {"selector", "namespaceSelector", "endpoints", "jobLabel", "targetLabels"}


def test_the_network_policy_admits_only_the_metrics_port_and_the_needed_egress(rendered: dict[str, Any]) -> None:
    policy = rendered["NetworkPolicy"]["spec"]
    pod_labels = rendered["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert _selects(policy["podSelector"]["matchLabels"], pod_labels)
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    ingress_ports = {(p["protocol"], p["port"]) for rule in policy["ingress"] for p in rule["ports"]}
    assert ingress_ports == {("TCP", 9464)}
    egress = {(p["protocol"], p["port"]) for rule in policy["egress"] for p in rule["ports"]}
    assert {("UDP", 53), ("TCP", 53), ("TCP", 443), ("TCP", 587), ("TCP", 465), ("TCP", 25)} <= egress
    open_to_all = {(p["protocol"], p["port"]) for rule in policy["egress"] if "to" not in rule for p in rule["ports"]}
    assert ("TCP", 80) not in open_to_all  # plain HTTP only to the link-local credential endpoints
