"""Fixtures for tests that configure logging (restored afterwards so pytest's log capture keeps working)."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture
def restore_logging():
    names = ("dinov2", "py.warnings", None)
    saved = {
        n: (logging.getLogger(n).handlers[:], logging.getLogger(n).level, logging.getLogger(n).propagate) for n in names
    }
    yield
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        for handler in logger.handlers[:]:
            if handler not in handlers:
                logger.removeHandler(handler)
                handler.close()
        logger.setLevel(level)
        logger.propagate = propagate
    logging.captureWarnings(False)
