"""SwiGLU with separate gate / value linears (``w1``, ``w2``, ``w3``), the layout of the DINOv3 release."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from dinov2.layers.swiglu_ffn import swiglu_hidden_features


class SwiGLUFFNSplit(nn.Module):
    """``w3(silu(w1(x)) * w2(x))``: ``[..., in] -> [..., out]``.

    The hidden width is ``int(2/3 * hidden_features)`` rounded up to a multiple of ``align_to`` (1536 for
    ViT-S+/16's 2304, 8192 for ViT-7B's 12288 with ``align_to=64``). ``act_layer`` / ``drop`` are accepted for
    signature compatibility with :class:`~dinov2.layers.Mlp` and unused, as in the release. Same arithmetic as
    :class:`~dinov2.layers.SwiGLUFFNFused` with ``w12`` split in two linears.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: Callable[..., nn.Module] | None = None,
        drop: float = 0.0,
        bias: bool = True,
        align_to: int = 8,
    ) -> None:
        super().__init__()
        out_features = out_features or in_features
        hidden = swiglu_hidden_features(hidden_features or in_features, align_to)
        self.w1 = nn.Linear(in_features, hidden, bias=bias)
        self.w2 = nn.Linear(in_features, hidden, bias=bias)
        self.w3 = nn.Linear(hidden, out_features, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.w3(F.silu(self.w1(x)) * self.w2(x))
