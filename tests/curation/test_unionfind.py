"""Union-find connected components against scipy, on random graphs split into edge chunks."""

from __future__ import annotations

import numpy as np
import pytest

from dinov2.curation.unionfind import connected_components

scipy_csgraph = pytest.importorskip("scipy.sparse.csgraph")
scipy_sparse = pytest.importorskip("scipy.sparse")


@pytest.mark.parametrize("seed", range(20))
def test_same_partition_as_scipy(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    edges = rng.integers(0, n, size=(int(rng.integers(0, 2 * n)), 2))  # isolated nodes, self-loops, repeats
    split = int(rng.integers(0, len(edges) + 1))
    labels = connected_components(n, lambda: [edges[:split], edges[split:]])
    graph = scipy_sparse.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    count, reference = scipy_csgraph.connected_components(graph, directed=False)
    assert len(np.unique(labels)) == count
    for component in range(count):  # one label per scipy component, and that label is its smallest node
        members = np.flatnonzero(reference == component)
        assert set(labels[members]) == {members.min()}


def test_labels_do_not_depend_on_edge_order_or_chunks():
    rng = np.random.default_rng(0)
    edges = rng.integers(0, 1000, size=(700, 2))
    one = connected_components(1000, lambda: [edges])
    shuffled = edges[rng.permutation(len(edges))][:, ::-1]
    many = connected_components(1000, lambda: np.array_split(shuffled, 13))
    np.testing.assert_array_equal(one, many)


def test_chain_and_bad_edges():
    chain = np.array([[i, i + 1] for i in range(99)][::-1])  # worst order for hooking
    assert (connected_components(100, lambda: [chain]) == 0).all()
    with pytest.raises(ValueError, match="endpoints"):
        connected_components(3, lambda: [np.array([[0, 3]])])
