"""ConvNeXt building blocks (Liu et al., "A ConvNet for the 2020s", 2022) as used by the DINOv3 ConvNeXts."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dinov2.layers.drop_path import DropPath


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of ``[B, C, H, W]`` (``channels_first``), written out as the release does."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(1, keepdim=True)  # [B, 1, H, W]
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class ConvNeXtBlock(nn.Module):
    """``x + drop_path(gamma * pwconv2(gelu(pwconv1(norm(dwconv(x))))))`` on ``[B, C, H, W]``.

    ``dwconv`` is a depthwise 7x7 convolution; the norm and the two pointwise linears run channels-last.
    ``gamma`` (layer scale) exists only when ``layer_scale_init_value > 0``.
    """

    def __init__(self, dim: int, drop_path: float = 0.0, layer_scale_init_value: float = 1e-6) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.layer_scale_init_value = layer_scale_init_value
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale_init_value)) if layer_scale_init_value > 0 else None
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        residual = self.dwconv(x).permute(0, 2, 3, 1)  # [B, H, W, C]
        residual = self.pwconv2(self.act(self.pwconv1(self.norm(residual))))
        if self.gamma is not None:
            residual = self.gamma * residual
        return x + self.drop_path(residual.permute(0, 3, 1, 2))
