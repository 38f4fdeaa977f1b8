"""Deduplication: planted near-copies found (recall and precision 1.0), one kept per group, relative dedup."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from dinov2.curation.arrays import RowSet
from dinov2.curation.dedup import deduplicate
from dinov2.curation.knn import SearchOptions
from tests.curation.synthetic import copy_at, planted_pool, random_units, save

scipy_csgraph = pytest.importorskip("scipy.sparse.csgraph")
scipy_sparse = pytest.importorskip("scipy.sparse")

DIM = 256


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """~3,500 unit rows: 3,000 random ones, 200 of which have 1-4 near-copies at cosine 0.7-0.99."""
    x, group = planted_pool(3000, 200, DIM, seed=0)
    sims = x @ x.T
    unrelated = group[:, None] != group[None, :]
    unrelated |= (group[:, None] < 0) & (np.arange(len(x))[:, None] != np.arange(len(x))[None, :])
    assert sims[unrelated].max() < 0.45  # the null: random pairs stay far below both thresholds
    return save(tmp_path_factory.mktemp("pool") / "pool.npy", x), group


def _brute_force(x: np.ndarray, k: int, threshold: float) -> np.ndarray:
    """Components (smallest row) from the full similarity matrix: top-k per row, edges > threshold."""
    sims = x.astype(np.float64) @ x.T.astype(np.float64)
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    rows = np.repeat(np.arange(len(x)), k)
    keep = sims[rows, top.ravel()] > threshold
    graph = scipy_sparse.coo_matrix((np.ones(keep.sum()), (rows[keep], top.ravel()[keep])), shape=(len(x),) * 2)
    _, labels = scipy_csgraph.connected_components(graph, directed=False)
    smallest = np.full(labels.max() + 1, len(x))
    np.minimum.at(smallest, labels, np.arange(len(x)))
    return smallest[labels]


def _pairs(labels: np.ndarray) -> set[tuple[int, int]]:
    """Pairs of distinct rows sharing a label (labels < 0 are singletons)."""
    pairs = set()
    for label in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == label)
        pairs |= {(int(a), int(b)) for a in members for b in members if a < b}
    return pairs


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_planted_copies_found_one_kept_per_group(pool, tmp_path, backend):
    if backend == "faiss":
        pytest.importorskip("faiss")
    path, group = pool
    result = deduplicate(
        RowSet.open(path, "--embeddings"), tmp_path, k=64, threshold=0.6, options=SearchOptions(backend=backend)
    )
    found, planted = _pairs(result.components), _pairs(group)
    recall = len(found & planted) / len(planted)
    precision = len(found & planted) / len(found)
    assert (recall, precision) == (1.0, 1.0)
    for g in range(200):  # exactly one survivor per group: its lowest row
        members = np.flatnonzero(group == g)
        assert np.isin(members, result.kept).sum() == 1 and members.min() in result.kept
    assert len(result.kept) == 3000  # nothing else removed
    assert np.all(np.diff(result.kept) > 0) and result.kept.dtype == np.int64
    kept_on_disk = np.load(tmp_path / "kept_indices.npy", allow_pickle=False)
    np.testing.assert_array_equal(kept_on_disk, result.kept)
    np.testing.assert_array_equal(np.load(tmp_path / "components.npy"), _brute_force(np.load(path), 64, 0.6))


def test_graph_semantics_chain_and_strict_threshold(tmp_path):
    rng = np.random.default_rng(1)
    a = random_units(1, DIM, rng)[0]
    b = copy_at(a, 0.8, rng)
    c = copy_at(b, 0.8, rng)  # a-b and b-c above 0.6, a-c at ~0.64 or below: the chain makes one component
    x = np.concatenate([[a, b, c], random_units(40, DIM, rng)]).astype(np.float64)
    x[3] = copy_at(x[4], 0.5, rng)  # a pair below the threshold: two components
    result = deduplicate(RowSet.open(save(tmp_path / "x.npy", x), "x"), tmp_path / "out", k=3, threshold=0.6)
    assert result.components[:3].tolist() == [0, 0, 0]
    assert 1 not in result.kept and 2 not in result.kept and 3 in result.kept and 4 in result.kept
    # strict threshold: a pair at exactly the threshold (in float64) is not an edge
    y = np.array([[1.0, 0.0], [0.5, np.sqrt(0.75)]])  # cosine exactly 0.5
    strict = deduplicate(RowSet.open(save(tmp_path / "y.npy", y), "y"), tmp_path / "strict", k=2, threshold=0.5)
    assert strict.kept.tolist() == [0, 1]


def test_relative_dedup_drops_every_component_touching_a_reference(tmp_path):
    rng = np.random.default_rng(2)
    pool = random_units(300, DIM, rng)
    references = random_units(3, DIM, rng)
    pool[0] = copy_at(references[0], 0.5, rng)  # above 0.45: linked to a reference
    pool[1] = copy_at(pool[0], 0.6, rng)  # linked to row 0 only (not to the reference): still dropped
    pool[2] = copy_at(pool[1], 0.55, rng)  # two hops away: dropped too
    pool[3] = copy_at(references[1], 0.4, rng)  # below 0.45: kept
    pool[4] = copy_at(pool[3], 0.9, rng)  # a self-duplicate pair far from references: both kept (no self-dedup)
    result = deduplicate(
        RowSet.open(save(tmp_path / "pool.npy", pool), "--embeddings"),
        tmp_path / "out",
        k=8,
        threshold=0.45,
        reference=RowSet.open(save(tmp_path / "ref.npy", references), "--reference"),
    )
    assert result.kept.tolist() == list(range(3, 300))
    assert result.components[:3].tolist() == [0, 0, 0]


def test_subset_outputs_original_rows(pool, tmp_path):
    path, group = pool
    subset = np.arange(0, len(group), 2, dtype=np.int64)
    result = deduplicate(
        RowSet.open(path, "--embeddings", save(tmp_path / "subset.npy", subset)), tmp_path / "out", k=16, threshold=0.6
    )
    assert (result.components[1::2] == -1).all()
    expected = subset[_brute_force(np.load(path)[subset], 16, 0.6)]  # the same dedup on a copy of the rows
    np.testing.assert_array_equal(result.components[subset], expected)
    np.testing.assert_array_equal(result.kept, np.unique(expected))


def test_rerun_is_skipped_and_other_parameters_refused(tmp_path):
    x = random_units(50, 16, np.random.default_rng(3))
    rows = RowSet.open(save(tmp_path / "x.npy", x), "x")
    first = deduplicate(rows, tmp_path / "out", k=4, threshold=0.9)
    (tmp_path / "out" / "edges").rename(tmp_path / "moved")  # a re-run must not need the edges again
    again = deduplicate(rows, tmp_path / "out", k=4, threshold=0.9)
    np.testing.assert_array_equal(first.kept, again.kept)
    with pytest.raises(ValueError, match="other parameters.*threshold"):
        deduplicate(rows, tmp_path / "out", k=4, threshold=0.8)


def test_bad_inputs_name_the_file_and_the_fix(tmp_path):
    rng = np.random.default_rng(4)
    x = random_units(20, 8, rng)
    scaled = save(tmp_path / "scaled.npy", x * 2)
    with pytest.raises(ValueError, match=r"scaled\.npy.*norm 2\.0.*normalise"):
        deduplicate(RowSet.open(scaled, "--embeddings"), tmp_path / "a", k=4)
    nan = x.copy()
    nan[7, 3] = np.nan
    with pytest.raises(ValueError, match=r"row 7 of .*nan\.npy.*not finite"):
        deduplicate(RowSet.open(save(tmp_path / "nan.npy", nan), "--embeddings"), tmp_path / "b", k=4)
    good = RowSet.open(save(tmp_path / "good.npy", x), "--embeddings")
    with pytest.raises(ValueError, match=r"k=64 .*20 rows"):
        deduplicate(good, tmp_path / "c", k=64)
    other = RowSet.open(save(tmp_path / "other.npy", random_units(5, 9, rng)), "--reference")
    with pytest.raises(ValueError, match=r"--reference .*other\.npy.* dim 9 .*dim 8"):
        deduplicate(good, tmp_path / "d", k=4, reference=other)
    with pytest.raises(ValueError, match="1-D|2-D"):
        RowSet.open(save(tmp_path / "flat.npy", x.ravel()), "--embeddings")


def test_backend_fallback_without_faiss(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss now raises ImportError
    x = random_units(30, 8, np.random.default_rng(5))
    rows = RowSet.open(save(tmp_path / "x.npy", x), "x")
    with caplog.at_level("INFO", logger="dinov2"):
        auto = deduplicate(rows, tmp_path / "auto", k=4, threshold=0.9, options=SearchOptions(backend="auto"))
    assert "faiss is not installed" in caplog.text and len(auto.kept) == 30
    with pytest.raises(ImportError, match="pip install faiss-cpu"):
        deduplicate(rows, tmp_path / "faiss", k=4, options=SearchOptions(backend="faiss"))
    with pytest.raises(ValueError, match="needs faiss"):
        SearchOptions(backend="torch", index="IVF16,Flat")
