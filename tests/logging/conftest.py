"""Logging-test fixtures (shared with tests/utils)."""

from tests.utils.conftest import restore_logging  # noqa: F401
