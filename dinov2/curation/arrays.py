"""Embedding matrices on disk: one ``.npy`` or the shards written by ``embed``, memory-mapped, viewed by rows.

Formats accepted wherever a step takes embeddings (``--embeddings``, ``--pool``, ``--queries``, ``--reference``):

- a 2-D ``.npy`` file (float16, float32 or float64), one row per image;
- the output folder of ``embed`` (or its ``meta.json``): float16 shards ``shard-<i>.npy`` (memory-mappable) in
  row order, each with ``shard-<i>.txt`` holding the identity of each row (the dataset's sample description,
  one per line), and ``meta.json`` listing the shards (``{"format": "dinov2-embeddings", "count", "dim",
  "shards": [{"file", "rows"}], ...}``).

:class:`RowSet` is a view of some rows (all, or a sorted subset such as a dedup's ``kept_indices.npy``); steps
load their rank's contiguous slice of the view with :meth:`RowSet.load` and report original row numbers.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from dinov2.curation import parallel
from dinov2.curation.files import load_indices, load_npy, read_json

logger = logging.getLogger("dinov2")

__all__ = ["EMBEDDINGS_FORMAT", "Embeddings", "RowSet", "check_embeddings", "check_same_dim"]

EMBEDDINGS_FORMAT = "dinov2-embeddings"
NORM_TOLERANCE = 1e-2  # float16 storage keeps norms within ~1e-3 of 1


class Embeddings:
    """A ``[count, dim]`` embedding matrix from a ``.npy`` or an ``embed`` folder (see the module docstring).

    ``what`` names the input in errors (a command-line flag such as ``"--pool"``).
    """

    def __init__(self, path: str | os.PathLike, what: str = "embeddings"):
        path = Path(path)
        self.what = what
        if path.is_dir() or path.name == "meta.json":
            self.meta_path = path / "meta.json" if path.is_dir() else path
            self.path = self.meta_path.parent
            self._open_shards(read_json(self.meta_path, f"{what} ({path} is not an embed output folder)"))
        else:
            self.path, self.meta_path = path, None
            array = load_npy(path, what)
            self._check_matrix(array, path)
            self.shards, self.starts = [array], np.array([0, array.shape[0]], dtype=np.int64)
        self.count = int(self.starts[-1])
        self.dim = int(self.shards[0].shape[1]) if self.shards else 0
        if self.count == 0:
            raise ValueError(f"{what}: {str(path)!r} holds no rows")

    def _check_matrix(self, array: np.ndarray, path: Path) -> None:
        if array.ndim != 2 or array.dtype.kind != "f":
            raise ValueError(
                f"{self.what}: {str(path)!r} must be a 2-D float array [images, dim], got {array.dtype} "
                f"{list(array.shape)}; write embeddings with `python -m dinov2.curation embed` or np.save"
            )

    def _open_shards(self, meta: dict) -> None:
        if meta.get("format") != EMBEDDINGS_FORMAT:
            raise ValueError(f"{self.what}: {self.meta_path} is not a {EMBEDDINGS_FORMAT} meta.json")
        self.meta = meta
        self.shards = []
        for shard in meta["shards"]:
            array = load_npy(self.path / shard["file"], f"{self.what} shard")
            self._check_matrix(array, self.path / shard["file"])
            if array.shape[0] != shard["rows"]:
                raise ValueError(
                    f"{self.what}: shard {shard['file']} has {array.shape[0]} rows, meta.json says "
                    f"{shard['rows']}; re-run embed into a fresh folder"
                )
            self.shards.append(array)
        dims = {a.shape[1] for a in self.shards}
        if len(dims) > 1:
            raise ValueError(f"{self.what}: shards of {self.path} have different dims {sorted(dims)}")
        self.starts = np.concatenate([[0], np.cumsum([a.shape[0] for a in self.shards])]).astype(np.int64)

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return f"Embeddings({str(self.path)!r}, {self.count} x {self.dim})"

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` as a numpy array in the stored dtype (copied out of the shards)."""
        parts = []
        first = int(np.searchsorted(self.starts, start, side="right")) - 1
        for i in range(max(first, 0), len(self.shards)):
            lo, hi = max(start, self.starts[i]), min(stop, self.starts[i + 1])
            if lo >= hi:
                if self.starts[i] >= stop:
                    break
                continue
            parts.append(np.asarray(self.shards[i][lo - self.starts[i] : hi - self.starts[i]]))
        if not parts:
            return np.zeros((0, self.dim), dtype=self.shards[0].dtype)
        return np.concatenate(parts) if len(parts) > 1 else parts[0].copy()

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Rows at ``rows`` (int64, any order) as a numpy array."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.dim), dtype=self.shards[0].dtype)
        shard = np.searchsorted(self.starts, rows, side="right") - 1
        for i in np.unique(shard):
            mask = shard == i
            out[mask] = self.shards[i][rows[mask] - self.starts[i]]
        return out

    def identities(self) -> list[str] | None:
        """The identity of every row (embed folders only), else None."""
        if self.meta_path is None:
            return None
        names = []
        for shard in self.meta["shards"]:
            with open(self.path / shard["identities"], encoding="utf-8") as f:
                names.extend(line.rstrip("\n") for line in f)
        return names


class RowSet:
    """The rows ``rows`` (sorted int64; None = all) of ``embeddings``, split into contiguous rank slices."""

    def __init__(self, embeddings: Embeddings, rows: np.ndarray | None = None):
        self.embeddings = embeddings
        self.rows = rows
        self.count = len(embeddings) if rows is None else len(rows)

    @classmethod
    def open(cls, path: str | os.PathLike, what: str, subset: str | os.PathLike | None = None) -> RowSet:
        """Embeddings at ``path``, restricted to the sorted indices in the ``.npy`` ``subset`` when given."""
        embeddings = Embeddings(path, what)
        rows = None
        if subset:
            rows = load_indices(subset, f"{what} subset", upper=len(embeddings), sorted_unique=True)
        return cls(embeddings, rows)

    @property
    def dim(self) -> int:
        return self.embeddings.dim

    def __len__(self) -> int:
        return self.count

    def original(self, positions: np.ndarray) -> np.ndarray:
        """Original row numbers of view positions (int64)."""
        positions = np.asarray(positions, dtype=np.int64)
        return positions if self.rows is None else self.rows[positions]

    def read(self, start: int, stop: int) -> np.ndarray:
        """View positions ``[start, stop)`` as numpy rows in the stored dtype."""
        if self.rows is None:
            return self.embeddings.read(start, stop)
        return self.embeddings.take(self.rows[start:stop])

    def rank_slice(self) -> tuple[int, int]:
        return parallel.rank_bounds(self.count)

    def load(self, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu", chunk: int = 1 << 16):
        """This rank's slice as a ``[n_local, dim]`` tensor and its first view position ``(tensor, start)``."""
        start, stop = self.rank_slice()
        out = torch.empty(stop - start, self.dim, dtype=dtype, device=device)
        for lo in range(start, stop, chunk):
            hi = min(lo + chunk, stop)
            out[lo - start : hi - start] = torch.from_numpy(self.read(lo, hi).astype(np.float32, copy=False))
        return out, start


def check_embeddings(rowset: RowSet, what: str, *, normalised: bool = True, chunk: int = 1 << 16) -> None:
    """Collective: raise if any row of ``rowset`` is non-finite or (when ``normalised``) not of unit norm.

    The message names the input, the first bad row and the fix.
    """
    start, stop = rowset.rank_slice()
    bad = torch.tensor([rowset.count, rowset.count], dtype=torch.int64)  # first non-finite, first non-unit
    for lo in range(start, stop, chunk):
        block = rowset.read(lo, min(lo + chunk, stop)).astype(np.float32)
        finite = np.isfinite(block).all(axis=1)
        if not finite.all() and bad[0] == rowset.count:
            bad[0] = lo + int(np.argmin(finite))
        if normalised:
            norms = np.linalg.norm(np.where(np.isfinite(block), block, 0.0), axis=1)
            off = finite & (np.abs(norms - 1.0) > NORM_TOLERANCE)
            if off.any() and bad[1] == rowset.count:
                bad[1] = lo + int(np.argmax(off))
    parallel.all_reduce(bad, op="min")
    source = str(rowset.embeddings.path)
    if bad[0] < rowset.count:
        row = int(rowset.original([int(bad[0])])[0])
        raise ValueError(
            f"{what}: row {row} of {source!r} is not finite (NaN or inf); re-run embed (check the model weights "
            "and the precision) or drop those rows with a subset"
        )
    if bad[1] < rowset.count:
        row = int(rowset.original([int(bad[1])])[0])
        norm = float(np.linalg.norm(rowset.embeddings.take(np.array([row])).astype(np.float32)))
        raise ValueError(
            f"{what}: row {row} of {source!r} has L2 norm {norm:.4f}, not 1: cosine similarity needs "
            "L2-normalised rows; normalise them (x / ||x||) or write them with `python -m dinov2.curation embed`"
        )


def check_same_dim(a: RowSet, b: RowSet, what_a: str, what_b: str) -> None:
    if a.dim != b.dim:
        raise ValueError(
            f"{what_b} {str(b.embeddings.path)!r} has dim {b.dim} but {what_a} {str(a.embeddings.path)!r} has dim "
            f"{a.dim}: embed both with the same model"
        )
