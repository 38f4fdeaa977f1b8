"""Losses of the released depth heads: SILog (``SigLoss``) and the multi-scale log-depth gradient loss.

Both take predictions and ground truth ``[B, 1, H, W]`` in metres and ignore pixels without ground truth (0).

``gradient_loss(..., mode="released")`` reproduces the release's ``GradientLoss`` applied to ``[B, 1, H, W]``
tensors: its indexing (``x[::s, ::s]``, ``x[0:-2, :]``, ``x[:, 0:-2]``) acts on the batch and channel
dimensions, not on the image rows and columns, so with the released 2 images per GPU the term is exactly 0 (and
with more it compares different images). ``mode="spatial"`` is the loss as intended: gradients along rows and
columns of each image, at scales 1, 2, 4, 6.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["sigloss", "gradient_loss"]

_EPS = 0.001  # added before the logarithms (released: "avoid grad explode")


def sigloss(pred: Tensor, gt: Tensor, warm_up: bool = False) -> Tensor:
    """``sqrt(var(g) + 0.15 mean(g)^2)`` with ``g = log(pred + eps) - log(gt + eps)`` over all valid pixels of the
    batch; during warm-up ``sqrt(0.15 mean(g)^2)``. ``var`` is the unbiased variance, as released."""
    valid = gt > 0
    g = torch.log(pred[valid] + _EPS) - torch.log(gt[valid] + _EPS)
    if warm_up:
        return torch.sqrt(0.15 * g.mean() ** 2)
    return torch.sqrt(torch.var(g) + 0.15 * g.mean() ** 2)


def _two_apart(x: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """``x[0:-2]`` and ``x[2:]`` along ``dim`` (both empty when the dimension has fewer than 3 entries)."""
    n = x.size(dim)
    return x.narrow(dim, 0, max(n - 2, 0)), x.narrow(dim, min(2, n), max(n - 2, 0))


def _gradient_terms(pred: Tensor, gt: Tensor, row_dim: int, col_dim: int) -> Tensor:
    mask = (gt > 0).to(pred.dtype)
    diff = (torch.log(pred + _EPS) - torch.log(gt + _EPS)) * mask
    total = pred.new_zeros(())
    for dim in (row_dim, col_dim):
        (d0, d2), (m0, m2) = _two_apart(diff, dim), _two_apart(mask, dim)
        total = total + ((d0 - d2).abs() * m0 * m2).sum()
    return total / mask.sum().clamp_min(1)


def gradient_loss(pred: Tensor, gt: Tensor, mode: str = "spatial") -> Tensor:
    """Sum over scales 1, 2, 4, 6 (subsampling) of the masked log-depth gradient differences (2 px apart),
    each divided by that scale's number of valid pixels. ``mode``: ``spatial`` or ``released`` (see above)."""
    if mode == "released":  # the release indexes dims 0 and 1 of [B, 1, H, W]
        scaled = [(pred, gt)] + [(pred[:: 2 * i, :: 2 * i], gt[:: 2 * i, :: 2 * i]) for i in range(1, 4)]
        row_dim, col_dim = 0, 1
    elif mode == "spatial":
        scaled = [(pred, gt)] + [(pred[..., :: 2 * i, :: 2 * i], gt[..., :: 2 * i, :: 2 * i]) for i in range(1, 4)]
        row_dim, col_dim = -2, -1
    else:
        raise ValueError(f"gradient loss mode must be 'released' or 'spatial', got {mode!r}")
    return sum(_gradient_terms(p, g, row_dim, col_dim) for p, g in scaled)
