"""Run this folder's tests single-threaded: tiny tensors gain nothing from intra-op threads, and on a
shared, loaded CPU every parallel op can wait a scheduler time slice (measured 10x slower with 2 threads)."""

import pytest

from tests.conftest import torch_threads


@pytest.fixture(autouse=True)
def _single_thread():
    with torch_threads(1):
        yield
