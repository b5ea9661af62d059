"""Harness fixtures for the bench tests."""

from nbdb.testing.fixtures import redis_server  # noqa: F401
