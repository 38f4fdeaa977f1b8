"""KoLeo regulariser: Kozachenko-Leonenko differential-entropy estimate on L2-normalised features."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["KoLeoLoss"]


class KoLeoLoss(nn.Module):
    """``-mean_i log(||x_i - x_nn(i)|| + eps)`` on L2-normalised rows, nearest neighbour excluding self.

    Computed in float32 with autocast disabled. Faithful details of the release:

    - the nearest neighbour is the arg-max inner product with the diagonal set to -1 (ties: first index);
    - the distance is ``torch.nn.PairwiseDistance(p=2, eps=1e-8)``, which adds eps to the *difference*, so
      two identical rows are at distance ``1e-8 * sqrt(D)``, not 0;
    - a single row is its own "neighbour": the loss is a constant (~17.6 for D=64) with zero gradient.
    """

    def __init__(self) -> None:
        super().__init__()
        self.pdist = nn.PairwiseDistance(p=2, eps=1e-8)

    @staticmethod
    def pairwise_NNs_inner(x: torch.Tensor) -> torch.Tensor:  # noqa: N802 (released name)
        """Index [n] of each row's nearest neighbour by inner product, excluding itself. ``x``: [n, D]."""
        dots = x @ x.t()  # [n, n]
        dots.fill_diagonal_(-1)
        return torch.max(dots, dim=1).indices

    def forward(self, student_output: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
        """Features [n, D] (e.g. one global crop's student cls tokens) -> 0-d float32 loss."""
        if student_output.dim() != 2:
            raise ValueError(f"KoLeoLoss expects features [n, D], got shape {tuple(student_output.shape)}")
        with torch.autocast(device_type=student_output.device.type, enabled=False):
            x = F.normalize(student_output.float(), p=2, dim=-1, eps=eps)  # [n, D]
            with torch.no_grad():
                nn_index = self.pairwise_NNs_inner(x)  # [n]
            distances = self.pdist(x, x[nn_index])  # [n]
            return -torch.log(distances + eps).mean()
