"""Nearest neighbours by cosine similarity (inner product of L2-normalised rows) for dedup and retrieval.

Backends (:class:`SearchOptions`):

- ``torch`` (always available): exact search, chunked, on CPU or GPU. Each rank holds a contiguous slice of the
  database; every rank's queries are searched against every slice and the candidates merged, so the result
  equals a one-process search (ties go to the lower database row).
- ``faiss`` (``pip install faiss-cpu``, the ``curation`` extra): any inner-product ``index_factory`` string:
  ``Flat`` (exact), ``IVF4096,Flat`` or ``IVF4096,PQ32`` (inverted lists, product quantisation: the approximate
  indices the DINOv2 paper used at its scale), ``nprobe`` lists visited per query. IVF indices are trained on a
  seeded sample of ``train_size`` database rows. Each rank builds the index over the whole database and searches
  its own queries (memory: the index on every rank).
- ``auto``: faiss when it is installed, else torch.

Rows missing from an approximate result (fewer than k candidates in the visited lists) get index -1 and
similarity -inf.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging

import numpy as np
import torch

from dinov2.curation import parallel
from dinov2.curation._features import exact_knn
from dinov2.curation.arrays import RowSet

logger = logging.getLogger("dinov2")

__all__ = ["BACKENDS", "SearchOptions", "check_k", "import_faiss", "knn_search"]

BACKENDS = ("torch", "faiss", "auto")


@dataclasses.dataclass(frozen=True)
class SearchOptions:
    """How to search: ``backend`` (torch | faiss | auto), faiss ``index`` string and ``nprobe``, torch
    ``chunk_size`` (queries per block; None = automatic), the ``device`` of the torch search, faiss
    ``train_size`` (rows used to train IVF / PQ) and ``seed`` (which rows)."""

    backend: str = "torch"
    index: str = "Flat"
    nprobe: int = 16
    chunk_size: int | None = None
    device: str = "cpu"
    train_size: int = 262_144
    seed: int = 0

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"--backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.backend == "torch" and self.index != "Flat":
            raise ValueError(
                f"--index {self.index!r} needs faiss: pass --backend faiss (pip install faiss-cpu), or --index Flat"
            )
        if self.nprobe < 1 or self.train_size < 1:
            raise ValueError(f"--nprobe and the train size must be >= 1, got {self.nprobe} and {self.train_size}")


def import_faiss(required: bool):
    """The faiss module, or None when it is missing and not ``required`` (then the caller falls back)."""
    try:
        return importlib.import_module("faiss")
    except ImportError:
        if required:
            raise ImportError(
                "--backend faiss needs the faiss package: pip install faiss-cpu (or pip install -e '.[curation]'), "
                "or use --backend torch for the exact search"
            ) from None
        return None


def resolve_backend(options: SearchOptions) -> str:
    if options.backend == "torch":
        return "torch"
    faiss = import_faiss(required=options.backend == "faiss")
    if faiss is None:
        if options.index != "Flat":
            raise ImportError(f"--index {options.index!r} needs faiss (pip install faiss-cpu); none is installed")
        logger.info("faiss is not installed: exact torch search")
        return "torch"
    return "faiss"


def check_k(k: int, database: RowSet, what: str) -> None:
    """Raise unless 1 <= k <= the rows of ``database`` (the error names the file and the fix)."""
    if k < 1 or k > len(database):
        raise ValueError(
            f"k={k} neighbours requested but {what} {str(database.embeddings.path)!r} has {len(database)} rows; "
            f"use 1 <= k <= {len(database)}"
        )


def knn_search(database: RowSet, queries: torch.Tensor, k: int, options: SearchOptions, what: str = "database"):
    """Collective: the ``k`` most similar ``database`` rows of this rank's ``queries`` [q, D].

    Returns similarities [q, k] float32 (best first) and database view positions [q, k] int64 (positions in
    ``database``, see :meth:`RowSet.original`; -1 where an approximate index found fewer than k).
    """
    check_k(k, database, what)
    if queries.shape[1] != database.dim:
        raise ValueError(f"queries have dim {queries.shape[1]} but {what} has dim {database.dim}")
    if resolve_backend(options) == "faiss":
        return _faiss_search(database, queries, k, options)
    local, _ = database.load(torch.float32, options.device)  # this rank's contiguous slice
    sims, index = exact_knn(local, queries.to(options.device, torch.float32), k, chunk_size=options.chunk_size)
    return sims.cpu(), index.cpu()


def _build_faiss_index(faiss, database: RowSet, options: SearchOptions, chunk: int = 1 << 16):
    index = faiss.index_factory(database.dim, options.index, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        size = min(options.train_size, len(database))
        rows = np.sort(np.random.default_rng(options.seed).choice(len(database), size=size, replace=False))
        sample = np.ascontiguousarray(database.embeddings.take(database.original(rows)), dtype=np.float32)
        index.train(sample)
    for start in range(0, len(database), chunk):
        index.add(np.ascontiguousarray(database.read(start, min(start + chunk, len(database))), dtype=np.float32))
    if "IVF" in options.index:
        faiss.ParameterSpace().set_index_parameter(index, "nprobe", options.nprobe)
    return index


def _faiss_search(database: RowSet, queries: torch.Tensor, k: int, options: SearchOptions):
    faiss = import_faiss(required=True)
    rank, _ = parallel.world()
    logger.info("rank %d: building faiss index %r over %d rows", rank, options.index, len(database))
    index = _build_faiss_index(faiss, database, options)
    sims, found = index.search(np.ascontiguousarray(queries.cpu().numpy(), dtype=np.float32), k)
    sims = torch.from_numpy(sims).float()
    found = torch.from_numpy(found).long()
    sims[found < 0] = float("-inf")
    return sims, found
