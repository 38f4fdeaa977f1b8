"""Per-rank random number generator state of a checkpoint: capture, restore, and re-seeding on a new world size.

Each rank writes ``rng_rank<rank>.pt`` into the checkpoint folder: its python, numpy, torch CPU and current CUDA
device generator states, as tensors and plain values (``torch.load(weights_only=True)`` reads them). When the world
size is unchanged each rank gets its own state back (exact resume); otherwise streams cannot continue, and every
rank is re-seeded from a seed derived from the checkpoint (its rank-0 torch state) and its new rank, which is
reproducible but not the stream the old run would have drawn.
"""

from __future__ import annotations

import logging
import random
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dinov2 import distributed
from dinov2.utils.io import atomic_torch_save
from dinov2.utils.utils import fix_random_seeds

__all__ = ["capture_rng_state", "restore_rng_state", "rng_file", "save_rank_rng", "restore_rank_rng"]

logger = logging.getLogger("dinov2")


def capture_rng_state() -> dict[str, Any]:
    """This process's python, numpy, torch CPU and current-CUDA-device generator states (weights_only-loadable)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    cuda_initialized = torch.cuda.is_available() and torch.cuda.is_initialized()
    return {
        "python": random.getstate(),
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        # only this process's device: the number of visible GPUs may differ when resuming
        "cuda": torch.cuda.get_rng_state() if cuda_initialized else None,
    }


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def rng_file(folder: Path, rank: int) -> Path:
    """The RNG state file of ``rank`` in a checkpoint folder."""
    return folder / f"rng_rank{rank:05d}.pt"


def save_rank_rng(folder: Path) -> None:
    """Write this rank's generator states into ``folder`` (atomically)."""
    atomic_torch_save(capture_rng_state(), rng_file(folder, distributed.get_global_rank()))


def restore_rank_rng(folder: Path, saved_world_size: int, iteration: int) -> bool:
    """Restore this rank's generator states from ``folder``; True if restored exactly.

    When the checkpoint was saved by another number of processes (or this rank's file is missing), re-seed every
    generator from the checkpoint's rank-0 torch state, this rank and ``iteration``, and return False.
    """
    rank = distributed.get_global_rank()
    own = rng_file(folder, rank)
    if saved_world_size == distributed.get_global_size() and own.is_file():
        restore_rng_state(torch.load(own, weights_only=True))
        return True
    first = rng_file(folder, 0)
    base = zlib.crc32(torch.load(first, weights_only=True)["torch"].numpy().tobytes()) if first.is_file() else 0
    fix_random_seeds(base + 1_000_003 * rank + iteration)
    logger.info(
        "world size changed (%d -> %d): RNG re-seeded per rank", saved_world_size, distributed.get_global_size()
    )
    return False
