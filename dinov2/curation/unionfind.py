"""Connected components of a large sparse graph given as edge lists (vectorised union-find).

Nodes are ``0 .. n-1``; edges come in chunks of ``[E, 2]`` int64 arrays (e.g. memory-mapped per-rank edge files),
so the graph never has to fit in memory at once, only the ``parent`` array (8 bytes per node). Each pass over
the edges finds the roots of both ends (pointer jumping on the queried nodes), hooks the larger root under the
smaller one (``parent`` only ever decreases, so no cycle can form) and ends with a full path compression.
Passes repeat until one changes nothing. The label of every node is the smallest node of its component, which
makes the labels independent of the edge order and of how the edges were split.

scipy's ``connected_components`` gives the same partition (tested) but needs the whole graph as one CSR matrix.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import numpy as np

logger = logging.getLogger("dinov2")

__all__ = ["connected_components"]


def _roots(parent: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    roots = parent[nodes]
    while True:
        up = parent[roots]
        if np.array_equal(up, roots):
            return roots
        roots = up


def _compress(parent: np.ndarray) -> None:
    while True:
        up = parent[parent]
        if np.array_equal(up, parent):
            return
        parent[:] = up


def connected_components(n: int, edges: Callable[[], Iterable[np.ndarray]], max_passes: int = 1000) -> np.ndarray:
    """Component label (smallest node of the component) of every node, int64 [n].

    ``edges()`` returns a fresh iterable of ``[E, 2]`` integer arrays each time it is called (it is read once per
    pass). Self-loops and repeated edges are allowed; nodes without edges are their own component.
    """
    parent = np.arange(n, dtype=np.int64)
    for passes in range(1, max_passes + 1):
        changed = False
        for chunk in edges():
            chunk = np.asarray(chunk)
            if chunk.size == 0:
                continue
            if chunk.ndim != 2 or chunk.shape[1] != 2:
                raise ValueError(f"edges must be [E, 2] arrays, got shape {list(chunk.shape)}")
            if chunk.min() < 0 or chunk.max() >= n:
                raise ValueError(f"edge endpoints must lie in [0, {n}), got [{chunk.min()}, {chunk.max()}]")
            a, b = _roots(parent, chunk[:, 0]), _roots(parent, chunk[:, 1])
            low, high = np.minimum(a, b), np.maximum(a, b)
            merge = low != high
            if merge.any():
                np.minimum.at(parent, high[merge], low[merge])  # each root hooks under its smallest partner
                changed = True
        _compress(parent)
        if not changed:
            logger.info(
                "union-find: %d nodes, %d components after %d passes", n, int((parent == np.arange(n)).sum()), passes
            )
            return parent
    raise RuntimeError(f"union-find did not converge in {max_passes} passes")
