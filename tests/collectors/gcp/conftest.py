"""Fixtures for the GCP collector tests: the fake Google API server (tests/doubles/google.py)."""

from tests.doubles.google import google_api  # noqa: F401  (fixture)
