"""Run this folder's tests single-threaded: tiny tensors gain nothing from intra-op threads, and on a
shared, loaded CPU every parallel op can wait a scheduler time slice (measured 10x slower with 2 threads)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
