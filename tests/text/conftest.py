"""Single-threaded tests here too (see tests/models/conftest.py for why)."""

from tests.models.conftest import _single_thread  # noqa: F401  (autouse fixture)
