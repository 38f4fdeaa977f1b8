"""k-means: Lloyd equals scikit-learn from the same initial centroids; k-means++; checkpoints; bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dinov2.curation.kmeans import kmeans, kmeans_plusplus
from tests.curation.synthetic import blobs

sklearn_cluster = pytest.importorskip("sklearn.cluster")


@pytest.fixture(scope="module")
def data():
    points, _ = blobs([300, 200, 150, 120, 100, 80, 60, 50], dim=12, spread=1.0, seed=0)
    return points  # float64 [1060, 12]


@pytest.mark.parametrize("n_iters", [1, 4, 20])
def test_lloyd_equals_sklearn_from_the_same_init(data, n_iters):
    init = data[np.random.default_rng(1).choice(len(data), 8, replace=False)]
    ours = kmeans(torch.from_numpy(data), 8, n_iters=n_iters, init=torch.from_numpy(init))
    reference = sklearn_cluster.KMeans(8, init=init, n_init=1, max_iter=n_iters, tol=0, algorithm="lloyd").fit(data)
    assert ours.objective == pytest.approx(reference.inertia_, rel=1e-10)
    np.testing.assert_allclose(ours.centroids.numpy(), reference.cluster_centers_, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(ours.assignment.numpy(), reference.labels_)
    inertia = ((data - ours.centroids.numpy()[ours.assignment.numpy()]) ** 2).sum()  # recomputed independently
    assert ours.objective == pytest.approx(inertia, rel=1e-12)


def test_float32_rows_match_float64_and_objective_never_increases(data):
    init = torch.from_numpy(data[:8])
    objectives = []
    record = lambda _, centroids: objectives.append(  # noqa: E731
        float(((data[:, None, :] - centroids.numpy()[None]) ** 2).sum(-1).min(1).sum())
    )
    exact = kmeans(torch.from_numpy(data), 8, n_iters=15, init=init, callback=record)
    single = kmeans(torch.from_numpy(data).float(), 8, n_iters=15, init=init)
    assert single.objective == pytest.approx(exact.objective, rel=1e-5)
    assert all(b <= a * (1 + 1e-12) for a, b in zip(objectives, objectives[1:]))


def test_kmeans_plusplus_potential_like_sklearn(data):
    def potential(centres):
        return ((data[:, None, :] - centres[None]) ** 2).sum(-1).min(1).sum()

    x = torch.from_numpy(data)
    ours = [potential(kmeans_plusplus(x, 8, seed=s)[0].numpy()) for s in range(20)]
    theirs = [potential(sklearn_cluster.kmeans_plusplus(data, 8, random_state=s)[0]) for s in range(20)]
    assert np.mean(ours) == pytest.approx(np.mean(theirs), rel=0.05)
    centres, rows = kmeans_plusplus(x, 8, seed=3)
    np.testing.assert_array_equal(centres.numpy(), data[rows])  # the centres are data rows
    assert len(set(rows.tolist())) == 8


def test_empty_cluster_keeps_its_centroid(data):
    init = np.concatenate([data[:7], np.full((1, 12), 100.0)])  # nothing is ever closest to the last one
    result = kmeans(torch.from_numpy(data), 8, n_iters=5, init=torch.from_numpy(init))
    np.testing.assert_array_equal(result.centroids[7].numpy(), init[7])
    assert not (result.assignment == 7).any()


def test_resume_from_checkpoints_gives_the_uninterrupted_result(data, tmp_path):
    x = torch.from_numpy(data)
    straight = kmeans(x, 8, n_iters=9, seed=5)

    def stop(iteration, _):
        if iteration == 6:  # during the 7th iteration, after the checkpoint of the 6th
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        kmeans(x, 8, n_iters=9, seed=5, checkpoint_dir=tmp_path, checkpoint_every=2, callback=stop)
    with np.load(tmp_path / "state.npz") as state:
        assert int(state["iteration"]) == 6
    resumed = kmeans(x, 8, n_iters=9, seed=5, checkpoint_dir=tmp_path, checkpoint_every=2)
    np.testing.assert_array_equal(resumed.centroids.numpy(), straight.centroids.numpy())
    np.testing.assert_array_equal(resumed.init_indices, straight.init_indices)
    # k-means++ progress: a state saved after 9 of 10 centres continues to the same 10th centre
    full, rows = kmeans_plusplus(x, 10, seed=6)
    kmeans_plusplus(x, 10, seed=6, checkpoint=tmp_path / "init.npz", checkpoint_every=3)
    with np.load(tmp_path / "init.npz") as state:
        assert len(state["indices"]) == 9
    again, again_rows = kmeans_plusplus(x, 10, seed=6, checkpoint=tmp_path / "init.npz", checkpoint_every=3)
    np.testing.assert_array_equal(again_rows, rows)


def test_more_clusters_than_points_is_refused(data):
    with pytest.raises(ValueError, match="cannot make 2000 clusters of 1060 points"):
        kmeans(torch.from_numpy(data), 2000, n_iters=1)
