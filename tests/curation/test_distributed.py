"""Two gloo processes give the results of one: embedding, k-means++ picks, Lloyd, hierarchical k-means, dedup,
retrieval."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dinov2.curation import parallel
from dinov2.curation.arrays import RowSet
from dinov2.curation.cli import main as curation_main
from dinov2.curation.dedup import deduplicate
from dinov2.curation.hierarchy import hierarchical_kmeans
from dinov2.curation.kmeans import kmeans
from dinov2.curation.retrieval import retrieve_by_samples
from tests.conftest import preserved_logging
from tests.curation.synthetic import blobs, planted_pool, save
from tests.curation.test_embed import embed_argv, tiny_backbone
from tests.dist_helpers import run_distributed

pytestmark = pytest.mark.slow  # two spawned processes run every step (~15 s on 2 busy cores)

OUTPUTS = [
    "hkm/level1/assignment.npy",
    "hkm/level1/centroids.npy",
    "hkm/level2/assignment.npy",
    "hkm/level2/centroids.npy",
    "dedup/kept_indices.npy",
    "dedup/components.npy",
    "retrieve/retrieved_indices.npy",
    "retrieve/neighbours.npy",
    "embed/shard-00000.npy",
    "embed/shard-00001.npy",
    "embed/shard-00002.txt",
]


def _steps(rank: int, world: int, data: Path, pool: Path, out: Path, images: str):
    """Every curation step on this rank's slices; returns the k-means result (local parts) of this rank."""
    import tests.train.tiny  # noqa: F401  (registers the tiny test arch in this process)

    curation_main(embed_argv(data.parent, images, out / "embed"))
    points = torch.from_numpy(np.load(data))
    start, stop = parallel.rank_bounds(len(points))
    result = kmeans(points[start:stop], 12, n_iters=8, seed=3)
    rows = RowSet.open(data, "--embeddings")
    hierarchical_kmeans(rows, out / "hkm", [12, 4], [2, 1], [20, 2], n_iters=5, seed=1, dtype="float64")
    pool_rows = RowSet.open(pool, "--embeddings")
    deduplicate(pool_rows, out / "dedup", k=8, threshold=0.6)
    retrieve_by_samples(pool_rows, RowSet(rows.embeddings, np.arange(0, 301, 3)), out / "retrieve", k=4)
    return result.centroids, result.assignment, result.init_indices, result.objective


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    points, _ = blobs([150, 90, 60, 40, 25, 20, 14, 9, 7, 5], dim=16, spread=0.5, seed=2)  # 420 rows: uneven slices
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    data = save(root / "x.npy", points.astype(np.float32))
    pool, _ = planted_pool(400, 40, 16, seed=4, low=0.8)
    pool = save(root / "pool.npy", pool)
    tiny_backbone(root)
    images = f"Synthetic:root={root}/images:num_classes=2:images_per_class=11:size=40x32"
    with preserved_logging():
        single = _steps(0, 1, data, pool, root / "one", images)
    two = run_distributed(_steps, 2, data, pool, root / "two", images)
    return root, single, two


def test_kmeans_plusplus_and_lloyd_equal_on_one_and_two_processes(runs):
    _, (centroids, assignment, picked, objective), two = runs
    for rank_result in two:
        np.testing.assert_array_equal(rank_result[2], picked)  # the same k-means++ rows
        np.testing.assert_allclose(rank_result[0].numpy(), centroids.numpy(), rtol=0, atol=1e-12)
        assert rank_result[3] == pytest.approx(objective, rel=1e-12)
    np.testing.assert_array_equal(torch.cat([two[0][1], two[1][1]]).numpy(), assignment.numpy())


@pytest.mark.parametrize("output", OUTPUTS)
def test_step_outputs_equal_on_one_and_two_processes(runs, output):
    root = runs[0]
    if output.endswith(".txt"):  # identities
        assert (root / "two" / output).read_text() == (root / "one" / output).read_text()
        return
    one, two = np.load(root / "one" / output), np.load(root / "two" / output)
    assert two.dtype == one.dtype, output
    if one.dtype == np.float16:
        # float16 embedding shards: the two runs' float32 features differ in their last bits (other batches), which
        # can move a value to the neighbouring float16 (2e-6 apart near 0.003, more than the atol below)
        np.testing.assert_array_max_ulp(two, one, maxulp=1)
    elif one.dtype.kind == "f":
        np.testing.assert_allclose(two, one, rtol=0, atol=1e-6)
    else:
        np.testing.assert_array_equal(two, one)
