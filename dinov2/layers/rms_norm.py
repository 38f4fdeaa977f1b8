"""Root-mean-square layer normalisation (Zhang & Sennrich, 2019), the DINOv3 ViT's ``norm_layer='rmsnorm'``."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x ** 2) + eps) * weight`` over the last dimension; the division runs in float32."""

    def __init__(self, dim: int, eps: float = 1e-5, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()
        # Normalise in float32 and cast back before the weight, as the release does (matters in bf16).
        normed = (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x)
        return normed * self.weight
