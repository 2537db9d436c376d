"""Render deploy/kubernetes/kustomization.yaml the way ``kustomize build`` does, for what it uses.

Supported (and nothing else, so a kustomization that grows a feature fails here instead of being
half-rendered): ``resources`` (files), ``namespace`` and ``images`` (name → newName/newTag/digest).
The test compares this with ``kubectl kustomize`` where kubectl is installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "images"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass"}


class KustomizeError(ValueError):
    pass


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def render(folder: Path) -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    if kustomization.get("kind") != "Kustomization":
        raise KustomizeError("kustomization.yaml: kind must be Kustomization")
    unknown = set(kustomization) - SUPPORTED
    if unknown:
        raise KustomizeError(f"kustomization.yaml: this renderer does not support {sorted(unknown)}")
    resources: list[dict[str, Any]] = []
    for name in kustomization.get("resources") or []:
        path = folder / name
        if not path.is_file():
            raise KustomizeError(f"kustomization.yaml: resource {name} does not exist")
        resources += load_documents(path)
    namespace = kustomization.get("namespace")
    for resource in resources:
        if namespace and resource["kind"] not in CLUSTER_SCOPED:
            resource.setdefault("metadata", {})["namespace"] = namespace
        _set_images(resource, kustomization.get("images") or [])
    _unique(resources)
    return resources


def _set_images(resource: dict[str, Any], images: list[dict[str, str]]) -> None:
    spec = ((resource.get("spec") or {}).get("template") or {}).get("spec") or {}
    for field in ("initContainers", "containers"):
        for container in spec.get(field) or []:
            name, tag = _split(container["image"])
            for image in images:
                if image["name"] == name:
                    new = image.get("newName", name)
                    if "digest" in image:
                        container["image"] = f"{new}@{image['digest']}"
                    else:
                        container["image"] = f"{new}:{image.get('newTag', tag)}" if image.get("newTag") or tag else new


def _split(image: str) -> tuple[str, str | None]:
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        return image.rsplit(":", 1)[0], image.rsplit(":", 1)[1]
    return image, None


def _unique(resources: list[dict[str, Any]]) -> None:
    seen = set()
    for resource in resources:
        key = (
            resource["apiVersion"],
            resource["kind"],
            resource["metadata"].get("namespace"),
            resource["metadata"]["name"],
        )
        if key in seen:
            raise KustomizeError(f"resource {key} appears twice")
        seen.add(key)
