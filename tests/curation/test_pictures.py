"""Cluster picture grids: one row per cluster, the closest members first (level 1), original images above."""

from __future__ import annotations

import numpy as np
from PIL import Image

from dinov2.curation.pictures import cluster_grid, cluster_members
from dinov2.curation.sampling import Clustering


class _Colours:
    """Image i is a solid colour (i, 255 - i, 0)."""

    def __getitem__(self, index):
        return Image.new("RGB", (20, 12), (index, 255 - index, 0)), -1


def test_grid_rows_and_thumbnails():
    labels = np.array([0, 1, 0, 1, 2, 0])
    distances = np.array([0.5, 0.1, 0.2, 0.3, 0.0, 0.9], dtype=np.float32)
    clustering = Clustering(None, [labels, np.array([0, 0, 1])], [3, 2], distances, np.arange(6) * 10)
    grid = cluster_grid(clustering, _Colours(), clusters=3, per_cluster=2, size=8)
    cell = 8 + 2
    assert grid.size == (110 + 2 * cell, 3 * cell)
    pixels = np.asarray(grid)
    # row 0 = cluster 0: members 2 then 0 (by distance), shown through rows -> dataset images 20 and 0
    assert tuple(pixels[4, 110 + 4]) == (20, 235, 0) and tuple(pixels[4, 110 + cell + 4]) == (0, 255, 0)
    np.testing.assert_array_equal(cluster_members(clustering, 2), [0, 0, 0, 0, 1, 0])
    upper = cluster_grid(clustering, _Colours(), level=2, clusters=2, per_cluster=5, size=8)
    assert upper.size == (110 + 5 * cell, 2 * cell)
