"""Packed token layout shared by the blocks: several crop groups flattened into one ``[T, D]`` tensor.

Multi-crop training feeds crops of different sizes (e.g. 2 global crops of 257 tokens and 8 local crops of
37 tokens) through each block together. All per-token layers (norms, linears, MLP) run once on the
concatenation of every group's tokens; only attention looks at the layout, and attends within each image of
each group. ``groups`` lists ``(images, tokens_per_image)`` per group, in packing order.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

Groups = Sequence[tuple[int, int]]


def pack(xs: Sequence[Tensor]) -> tuple[Tensor, list[tuple[int, int]]]:
    """``[B_i, N_i, D]`` tensors -> packed ``[sum B_i * N_i, D]`` tensor and its groups."""
    groups = [(x.shape[0], x.shape[1]) for x in xs]
    if len(xs) == 1:
        return xs[0].reshape(-1, xs[0].shape[-1]), groups
    return torch.cat([x.reshape(-1, x.shape[-1]) for x in xs]), groups


def unpack(x: Tensor, groups: Groups) -> list[Tensor]:
    """Inverse of :func:`pack`: packed ``[T, D]`` -> list of ``[B_i, N_i, D]`` views."""
    parts = x.split([b * n for b, n in groups])
    return [part.view(b, n, x.shape[-1]) for part, (b, n) in zip(parts, groups)]


def per_token(values: Tensor, groups: Groups) -> Tensor:
    """Repeat one value per image (``[sum B_i]``) for each of its tokens: ``-> [T]``."""
    parts = values.split([b for b, _ in groups])
    return torch.cat([part.repeat_interleave(n) for part, (_, n) in zip(parts, groups)])
