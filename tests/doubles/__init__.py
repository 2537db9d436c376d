"""Test doubles, all in one place: clocks, the loopback-only network guard, local cloud servers.

Each module is imported by ``tests/conftest.py`` (fixtures) or directly by tests.
"""
