"""Curation test fixtures: faiss on one OpenMP thread (its thread pool spins on small inputs and busy cores)."""

from __future__ import annotations

import importlib.util

import pytest


@pytest.fixture(autouse=True)
def faiss_single_thread():
    if importlib.util.find_spec("faiss") is None:
        yield
        return
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(threads)
