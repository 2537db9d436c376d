"""Fixtures for the deploy tests: the fake Google API server (tests/doubles/google.py)."""

from tests.doubles.google import google_api  # noqa: F401  (fixture)
