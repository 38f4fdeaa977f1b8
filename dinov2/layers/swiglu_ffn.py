"""SwiGLU feed-forward networks (Shazeer, "GLU Variants Improve Transformer", 2020)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dinov2.layers.attention import XFORMERS_AVAILABLE as XFORMERS_AVAILABLE  # the release's module flags
from dinov2.layers.attention import XFORMERS_ENABLED as XFORMERS_ENABLED


class SwiGLUFFN(nn.Module):
    """``w3(silu(x1) * x2)`` where ``[x1, x2] = w12(x)`` splits in two halves: ``[..., in] -> [..., out]``.

    One ``w12`` linear (``in -> 2 * hidden``) computes gate and value in a single matmul. ``act_layer`` and
    ``drop`` are accepted for signature compatibility with :class:`Mlp` and unused (the released layer
    ignores them too).
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: Callable[..., nn.Module] | None = None,
        drop: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        out_features = out_features or in_features
        # a rule that yields 0 (the fused one for 1) falls back to in_features, as in the release
        hidden_features = self._hidden_features(hidden_features or in_features) or in_features
        self.w12 = nn.Linear(in_features, 2 * hidden_features, bias=bias)
        self.w3 = nn.Linear(hidden_features, out_features, bias=bias)

    @staticmethod
    def _hidden_features(hidden_features: int) -> int:
        """The hidden size built for a requested ``hidden_features`` (here: itself; subclasses change the rule)."""
        return hidden_features

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = self.w12(x).chunk(2, dim=-1)  # [..., hidden] each
        return self.w3(F.silu(x1) * x2)


def swiglu_hidden_features(hidden_features: int, align_to: int = 8) -> int:
    """Hidden size of a SwiGLU given the MLP's: two thirds, rounded up to a multiple of ``align_to``.

    DINOv2 uses 8; DINOv3 also offers 32, 64 (ViT-7B) and 128 (``ffn_layer='swiglu64'`` etc.).
    """
    return (int(hidden_features * 2 / 3) + align_to - 1) // align_to * align_to


class SwiGLUFFNFused(SwiGLUFFN):
    """SwiGLU with the DINOv2 hidden size ``((int(2/3 * hidden) + 7) // 8) * 8`` (4096 for ViT-g's 6144).

    The released code ran xformers' fused SwiGLU kernel here when available; this is the same arithmetic in
    plain PyTorch (``w12`` / ``w3`` keys are unchanged).
    """

    _hidden_features = staticmethod(swiglu_hidden_features)


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
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        out_features = out_features or in_features
        hidden = swiglu_hidden_features(hidden_features or in_features, align_to)
        self.w1 = nn.Linear(in_features, hidden, bias=bias, device=device)
        self.w2 = nn.Linear(in_features, hidden, bias=bias, device=device)
        self.w3 = nn.Linear(hidden, out_features, bias=bias, device=device)

    def forward(self, x: Tensor) -> Tensor:
        return self.w3(F.silu(self.w1(x)) * self.w2(x))


SwiGLU = SwiGLUFFN  # the release's name for the SwiGLU it falls back to without xformers (``w12`` / ``w3``)
SwiGLUFFNAligned = SwiGLUFFNSplit  # the DINOv2 release's name for the ``w1`` / ``w2`` / ``w3`` layout (dino.txt)
