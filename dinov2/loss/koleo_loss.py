"""KoLeo regulariser: Kozachenko-Leonenko differential-entropy estimate on L2-normalised features."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dinov2 import distributed

__all__ = ["KoLeoLoss", "KoLeoLossDistributed"]


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


class KoLeoLossDistributed(nn.Module):
    """DINOv3's distributed KoLeo (``dino.koleo_loss_distributed``): each rank's rows look for their ``topk``
    nearest neighbours among the rows of a group of ranks (the whole global batch when ``loss_group_size`` is None,
    else consecutive groups of ``loss_group_size`` rows: DINOv3 uses 16), gathered with gradients.

    Same arithmetic as :class:`KoLeoLoss` otherwise (float32, L2-normalised rows, ``PairwiseDistance(eps=1e-8)``,
    self excluded by setting its inner product to -1); the loss is ``-mean log(distance + eps)`` over the local rows
    and their ``topk`` neighbours. On one process with ``topk=1`` it equals :class:`KoLeoLoss`.
    """

    def __init__(self, topk: int = 1, loss_group_size: int | None = None) -> None:
        super().__init__()
        if topk < 1:
            raise ValueError(f"dino.koleo_topk must be >= 1, got {topk}")
        self.topk = int(topk)
        self.loss_group_size = loss_group_size
        self.pdist = nn.PairwiseDistance(p=2, eps=1e-8)

    def _group(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """The rows of this rank's group ``[G, D]`` and the offset of this rank's rows in it."""
        everything = distributed.all_gather_with_grad(x)  # [global_B, D], rank order
        local, total = x.shape[0], everything.shape[0]
        size = self.loss_group_size if self.loss_group_size is not None else total
        if size % local != 0 or total % size != 0:
            raise ValueError(
                f"dino.koleo_distributed_loss_group_size={size} must be a multiple of the per-process batch ({local}) "
                f"and divide the global batch ({total})"
            )
        ranks_per_group = size // local
        rank = distributed.get_global_rank()
        group, rank_in_group = rank // ranks_per_group, rank % ranks_per_group
        return everything[group * size : (group + 1) * size], rank_in_group * local

    def forward(self, student_output: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
        """This rank's features [local_B, D] -> 0-d float32 loss."""
        if student_output.dim() != 2:
            raise ValueError(f"KoLeoLossDistributed expects features [n, D], got shape {tuple(student_output.shape)}")
        with torch.autocast(device_type=student_output.device.type, enabled=False):
            x = F.normalize(student_output.float(), p=2, dim=-1, eps=eps)  # [local_B, D]
            group, offset = self._group(x)  # [G, D]
            with torch.no_grad():
                dots = x @ group.t()  # [local_B, G]
                rows = torch.arange(x.shape[0], device=x.device)
                dots[rows, rows + offset] = -1  # not its own neighbour
                indices = dots.topk(self.topk, dim=1).indices  # [local_B, topk]
            expanded = x.unsqueeze(1).expand(-1, self.topk, -1).flatten(0, 1)  # [local_B * topk, D]
            distances = self.pdist(expanded, group[indices].flatten(0, 1))
            return -torch.log(distances + eps).mean()
