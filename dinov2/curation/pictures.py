"""PNG grids of sample images per cluster, to see what the clusters of a hierarchical k-means hold.

One row per cluster (chosen at random, seeded, among the non-empty clusters of the level), ``per_cluster``
thumbnails per row: the points closest to the centroid for level 1, random members (original images) above.
Each row starts with a label ``L<level> #<cluster> (<points>)``.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from dinov2.curation.sampling import Clustering, load_clustering
from dinov2.utils.io import atomic_write

logger = logging.getLogger("dinov2")

__all__ = ["cluster_members", "cluster_grid", "write_cluster_grid"]

_LABEL_WIDTH = 110
_PAD = 2


def cluster_members(clustering: Clustering, level: int) -> np.ndarray:
    """The level-``level`` cluster of every level-1 input row (int64)."""
    if not 1 <= level <= len(clustering.assignments):
        raise ValueError(f"--level must be in [1, {len(clustering.assignments)}] for {clustering.path}, got {level}")
    labels = clustering.assignments[0]
    for assignment in clustering.assignments[1:level]:
        labels = assignment[labels]
    return labels


def cluster_grid(
    clustering: Clustering,
    dataset,
    *,
    level: int = 1,
    clusters: int = 16,
    per_cluster: int = 8,
    size: int = 64,
    seed: int = 0,
) -> Image.Image:
    """The grid image (RGB); ``dataset`` yields ``(PIL image, target)`` in embedding-row order."""
    labels = cluster_members(clustering, level)
    rng = np.random.default_rng(seed)
    present = np.unique(labels)
    chosen = np.sort(rng.choice(present, size=min(clusters, len(present)), replace=False))
    cell = size + _PAD
    grid = Image.new("RGB", (_LABEL_WIDTH + per_cluster * cell, len(chosen) * cell), "white")
    draw = ImageDraw.Draw(grid)
    for row, cluster in enumerate(chosen):
        members = np.flatnonzero(labels == cluster)
        if level == 1:
            members = members[np.argsort(clustering.distances[members], kind="stable")[:per_cluster]]
        else:
            members = np.sort(rng.choice(members, size=min(per_cluster, len(members)), replace=False))
        draw.text((4, row * cell + size // 2 - 6), f"L{level} #{cluster} ({(labels == cluster).sum()})", fill="black")
        for column, member in enumerate(members):
            index = int(member if clustering.rows is None else clustering.rows[member])
            image = dataset[index][0].convert("RGB")
            thumb = ImageOps.fit(image, (size, size), Image.Resampling.BICUBIC)
            grid.paste(thumb, (_LABEL_WIDTH + column * cell, row * cell))
    return grid


def write_cluster_grid(clustering_dir: str | Path, dataset, output: str | Path, **kwargs) -> Path:
    """Write :func:`cluster_grid` of a ``kmeans`` output folder as a PNG (atomically)."""
    grid = cluster_grid(load_clustering(clustering_dir), dataset, **kwargs)
    buffer = io.BytesIO()
    grid.save(buffer, format="PNG")
    with atomic_write(output) as f:
        f.write(buffer.getvalue())
    logger.info("pictures: %s (%d x %d)", output, *grid.size)
    return Path(output)
