"""Synthetic embeddings for the curation tests: unit vectors with planted near-copies and clustered data."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def normalise(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def random_units(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` random unit vectors: two of them have cosine ~ N(0, 1/dim) (max ~0.35 over 8M pairs at dim 256)."""
    return normalise(rng.standard_normal((n, dim)))


def copy_at(x: np.ndarray, cosine: float, rng: np.random.Generator) -> np.ndarray:
    """A unit vector whose cosine with the unit vector ``x`` is ``cosine`` (to ~1e-2 at dim 256)."""
    noise = rng.standard_normal(x.shape)
    noise -= (noise @ x) * x  # orthogonal to x, so the cosine is exact
    noise /= np.linalg.norm(noise)
    return cosine * x + np.sqrt(1 - cosine**2) * noise


def planted_pool(n_base: int, n_groups: int, dim: int, seed: int = 0, low: float = 0.7, high: float = 0.99):
    """(pool [N, dim], group id per row or -1): ``n_base`` random rows, the first ``n_groups`` of which get 1-4
    near-copies (cosine in [low, high] with their original) appended, rows shuffled."""
    rng = np.random.default_rng(seed)
    base = random_units(n_base, dim, rng)
    rows, groups = [base], [np.where(np.arange(n_base) < n_groups, np.arange(n_base), -1)]
    for g in range(n_groups):
        copies = rng.integers(1, 5)
        rows.append(np.stack([copy_at(base[g], rng.uniform(low, high), rng) for _ in range(copies)]))
        groups.append(np.full(copies, g))
    pool, group = np.concatenate(rows), np.concatenate(groups)
    order = rng.permutation(len(pool))
    return pool[order].astype(np.float32), group[order]


def blobs(n_per: list[int], dim: int, spread: float, seed: int = 0):
    """Gaussian blobs with ``n_per[i]`` points each around random unit centres: (points [N, dim], blob id)."""
    rng = np.random.default_rng(seed)
    centres = random_units(len(n_per), dim, rng) * 4.0
    points = np.concatenate([c + spread * rng.standard_normal((n, dim)) for c, n in zip(centres, n_per)])
    labels = np.repeat(np.arange(len(n_per)), n_per)
    return points, labels


def save(path: Path, array: np.ndarray) -> Path:
    np.save(path, array, allow_pickle=False)
    return path
