"""Fixtures for the deploy tests: the fake Google API server and the Kubernetes API server double."""

from tests.doubles.google import google_api  # noqa: F401  (fixture)
from tests.doubles.kubernetes_api import kube_api  # noqa: F401  (fixture)
