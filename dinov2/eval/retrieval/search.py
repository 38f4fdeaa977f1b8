"""Ranking a database (optionally grown with distractors) for each query, in the layout of the protocol.

``exact``: :class:`dinov2.features.KnnIndex` (inner products of the L2-normalised descriptors, chunked; equal
similarities rank the lower database index first). ``faiss``: a flat inner-product faiss index (exact too; the
``faiss-cpu`` package, extra ``curation``), for a database of a million distractors on a machine where the
torch search is slower. Both return ``ranks`` [k, n_queries] as :func:`~dinov2.eval.retrieval.metrics.compute_map`
takes them; ``k`` defaults to the whole database (exact mAP; a shorter ranking under-estimates AP).
"""

from __future__ import annotations

import importlib

import numpy as np
import torch

from dinov2.features.knn import KnnIndex

__all__ = ["SEARCH_BACKENDS", "rank_database"]

SEARCH_BACKENDS = ("exact", "faiss")


def _faiss_ranks(queries: torch.Tensor, database: torch.Tensor, k: int) -> np.ndarray:
    try:
        faiss = importlib.import_module("faiss")
    except ImportError:
        raise ImportError(
            "--search faiss needs the faiss package: pip install faiss-cpu (or pip install -e '.[curation]'), or use "
            "--search exact"
        ) from None
    index = faiss.IndexFlatIP(database.shape[1])
    index.add(np.ascontiguousarray(database.cpu().numpy(), dtype=np.float32))
    _, found = index.search(np.ascontiguousarray(queries.cpu().numpy(), dtype=np.float32), k)
    return found.T  # [k, n_queries]


def rank_database(
    queries: torch.Tensor, database: torch.Tensor, k: int | None = None, backend: str = "exact"
) -> np.ndarray:
    """Database indices by decreasing inner product, one column per query: [k, n_queries] int64.

    queries [Q, D] and database [N, D] are descriptors (already L2-normalised for cosine ranking); ``k``: ranking
    length (default N).
    """
    if backend not in SEARCH_BACKENDS:
        raise ValueError(f"unknown search backend {backend!r}; choose one of {', '.join(SEARCH_BACKENDS)}")
    n = database.shape[0]
    k = n if k is None or k <= 0 else k
    if k > n:
        raise ValueError(f"--topk {k} is larger than the database ({n} images); use --topk <= {n} or 0 (all)")
    if backend == "faiss":
        return _faiss_ranks(queries, database, k).astype(np.int64)
    index = KnnIndex(database, normalize=False, sharded=False)
    _, indices, _ = index.search(queries, k)  # [Q, k]
    return indices.cpu().numpy().T
