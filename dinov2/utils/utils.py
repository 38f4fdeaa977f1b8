"""Small helpers of the released ``dinov2.utils.utils``: cosine schedules, seeding, git state, weight loading."""

from __future__ import annotations

import logging
import os
import random
import subprocess

import numpy as np
import torch
from torch import nn

logger = logging.getLogger("dinov2")

__all__ = ["CosineScheduler", "fix_random_seeds", "get_sha", "has_batchnorms", "load_pretrained_weights"]


class CosineScheduler:
    """A per-iteration value: ``freeze_iters`` zeros, linear warm-up, then a cosine from ``base`` to ``final``.

    ``schedule`` is a float64 numpy array of length ``total_iters``: ``freeze_iters`` zeros, then
    ``linspace(start_warmup_value, base_value, warmup_iters)`` (end point included), then for
    ``i = 0 .. n-1`` with ``n = total_iters - warmup_iters - freeze_iters``:
    ``final + 0.5 * (base - final) * (1 + cos(pi * i / n))``. ``scheduler[it]`` is ``schedule[it]``, and
    ``final_value`` for ``it >= total_iters``. ``trunc_extra > 0`` (DINOv3's ``optim.schedule_trunc_extra``) cuts
    the cosine early and rescales it (:func:`_truncated_cosine`).
    """

    def __init__(
        self,
        base_value: float,
        final_value: float,
        total_iters: int,
        warmup_iters: int = 0,
        start_warmup_value: float = 0,
        freeze_iters: int = 0,
        trunc_extra: float = 0.0,
    ):
        n_cosine = total_iters - warmup_iters - freeze_iters
        if min(total_iters, warmup_iters, freeze_iters, n_cosine) < 0:
            raise ValueError(
                f"CosineScheduler needs 0 <= freeze_iters + warmup_iters <= total_iters, got freeze_iters="
                f"{freeze_iters}, warmup_iters={warmup_iters}, total_iters={total_iters}"
            )
        self.final_value = final_value
        self.total_iters = total_iters
        frozen = np.zeros(freeze_iters)
        warmup = np.linspace(start_warmup_value, base_value, warmup_iters)
        if trunc_extra == 0.0:
            steps = np.arange(n_cosine)
            # The operation order matters for bitwise equality with the released schedules.
            cosine = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * steps / len(steps)))
        else:
            cosine = _truncated_cosine(base_value, final_value, n_cosine, trunc_extra)
        self.schedule = np.concatenate((frozen, warmup, cosine))

    def __len__(self) -> int:
        return self.total_iters

    def __getitem__(self, it: int) -> float:
        if it >= self.total_iters:
            return self.final_value
        return self.schedule[it]


def _truncated_cosine(base_value: float, final_value: float, n_steps: int, trunc_extra: float) -> np.ndarray:
    """DINOv3's ``optim.schedule_trunc_extra``: the first ``n_steps`` values of a half cosine over
    ``int((1 + trunc_extra) * n_steps)`` points, rescaled so that it still runs from ``base_value`` to ``final_value``
    (a cosine cut before its flat tail)."""
    angles = np.linspace(0, np.pi, int((1 + trunc_extra) * n_steps))[:n_steps]
    schedule = (np.cos(angles) + 1) / 2
    schedule = (schedule - schedule[-1]) / (1 - schedule[-1])
    return schedule * (base_value - final_value) + final_value


def fix_random_seeds(seed: int = 31, *, cuda: bool = True) -> None:
    """Seed Python ``random``, NumPy's global RNG (``seed mod 2**32``) and torch: every device, or only the
    CPU generator with ``cuda=False`` (data-loader workers must not initialise CUDA)."""
    if cuda:
        torch.manual_seed(seed)  # also seeds every CUDA device
    else:
        torch.default_generator.manual_seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    random.seed(seed)


def get_sha() -> str:
    """``"sha: <commit>, status: clean|has uncommitted changes, branch: <name>"`` of this source tree (N/A if none)."""
    cwd = os.path.dirname(os.path.abspath(__file__))

    def run(*command: str) -> str:
        return subprocess.check_output(command, cwd=cwd, stderr=subprocess.DEVNULL).decode("ascii").strip()

    sha, status, branch = "N/A", "clean", "N/A"
    try:
        sha = run("git", "rev-parse", "HEAD")
        status = "has uncommitted changes" if run("git", "status", "--porcelain", "--untracked-files=no") else "clean"
        branch = run("git", "rev-parse", "--abbrev-ref", "HEAD")
    except (OSError, subprocess.CalledProcessError):
        pass
    return f"sha: {sha}, status: {status}, branch: {branch}"


def has_batchnorms(model: nn.Module) -> bool:
    """True if ``model`` contains a batch-norm layer (1d, 2d, 3d or synchronised)."""
    batchnorms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
    return any(isinstance(m, batchnorms) for m in model.modules())


def _strip_prefixes(key: str, prefixes: tuple[str, ...] = ("module.", "backbone.")) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in prefixes:
            if key.startswith(prefix):
                key, stripped = key[len(prefix) :], True
    return key


def load_pretrained_weights(model: nn.Module, pretrained_weights: str, checkpoint_key: str | None = None):
    """Load a checkpoint (path or URL) into ``model`` non-strictly; returns the missing/unexpected keys.

    Reads any source :func:`dinov2.models.weights.read_checkpoint` reads (``weights_only=True``). If
    ``checkpoint_key`` (e.g. ``"teacher"``) is a key of the checkpoint, that entry is used. Leading ``module.`` (DDP)
    and ``backbone.`` (training wrapper) prefixes are removed (the release removed these strings anywhere in a key;
    for DINOv2 checkpoints the result is the same). Missing and unexpected keys are logged as a warning.
    """
    # Deferred: utils/ sits below models/; the released path of this function is kept, the reading is not repeated.
    from dinov2.models.weights import read_checkpoint

    state_dict = read_checkpoint(pretrained_weights, argument="pretrained weights")
    if checkpoint_key is not None and checkpoint_key in state_dict:
        logger.info(f"Take key {checkpoint_key} in provided checkpoint dict")
        state_dict = state_dict[checkpoint_key]
    state_dict = {_strip_prefixes(k): v for k, v in state_dict.items()}
    msg = model.load_state_dict(state_dict, strict=False)
    logger.info(f"Pretrained weights found at {pretrained_weights} and loaded with msg: {msg}")
    if msg.missing_keys or msg.unexpected_keys:
        logger.warning(
            f"loading {pretrained_weights}: {len(msg.missing_keys)} missing key(s) {msg.missing_keys[:10]}, "
            f"{len(msg.unexpected_keys)} unexpected key(s) {msg.unexpected_keys[:10]}"
        )
    return msg
