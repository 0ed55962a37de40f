"""Fixtures shared by the integration tests: the engine in process (from test_api)."""

from tests.integration.test_api import engine

__all__ = ["engine"]
