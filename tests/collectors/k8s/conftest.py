"""Fixtures for the Kubernetes sources' tests."""

from __future__ import annotations

from tests.doubles.kubernetes_api import kube_api  # noqa: F401  (fixture: the Kubernetes API server double)
