"""Multi-head self-attention over one batch or over packed multi-crop groups.

The default kernel is ``torch.nn.functional.scaled_dot_product_attention`` (flash / memory-efficient
kernels on CUDA, a fused kernel on CPU). xformers is used only when asked for (``use_xformers=True``), when
it is installed, and when the input is on a CUDA device; it is imported lazily, never at module import.
"""

from __future__ import annotations

import importlib.util
import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dinov2.layers.packing import Groups

# The release's module flags: xformers not switched off by ``XFORMERS_DISABLED`` / installed. Here they only report;
# xformers runs where a model asks for it (``use_xformers=True``), never because it is installed.
XFORMERS_ENABLED = os.environ.get("XFORMERS_DISABLED") is None
XFORMERS_AVAILABLE = XFORMERS_ENABLED and importlib.util.find_spec("xformers") is not None


def require_xformers() -> None:
    """Raise a clear ImportError when xformers was asked for but is not installed."""
    if importlib.util.find_spec("xformers") is None:
        raise ImportError(
            "use_xformers=True but the 'xformers' package is not installed: install it (pip install xformers, "
            "CUDA only) or leave use_xformers=False to use torch's scaled_dot_product_attention"
        )


class Attention(nn.Module):
    """Self-attention with one fused ``qkv`` linear: ``[B, N, D] -> [B, N, D]``.

    ``forward(x, groups)`` also accepts packed tokens ``[T, D]`` with their layout (see
    :mod:`dinov2.layers.packing`): tokens attend only to tokens of the same image. Without xformers each
    group runs one batched SDPA call ``[B_i, H, N_i, hd]``; with xformers all groups run in one call with a
    block-diagonal mask (as the released code did).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = False,
        proj_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        use_xformers: bool = False,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embedding dim {dim} is not divisible by num_heads {num_heads}")
        if use_xformers:
            require_xformers()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_drop)
        self.use_xformers = use_xformers

    @torch.no_grad()
    def init_weights(
        self, init_attn_std: float | None = None, init_proj_std: float | None = None, factor: float = 1.0
    ) -> None:
        """The release's explicit initialisation (dino.txt blocks): qkv N(0, attn_std) (default ``dim ** -0.5``),
        projection N(0, proj_std) (default attn_std x factor), biases zero. Backbones use their own scheme."""
        init_attn_std = init_attn_std or self.qkv.in_features**-0.5
        init_proj_std = init_proj_std or init_attn_std * factor
        nn.init.normal_(self.qkv.weight, std=init_attn_std)
        nn.init.normal_(self.proj.weight, std=init_proj_std)
        for linear in (self.qkv, self.proj):
            if linear.bias is not None:
                nn.init.zeros_(linear.bias)

    def forward(self, x: Tensor, groups: Groups | None = None) -> Tensor:
        if groups is None:
            if x.ndim != 3:
                raise ValueError(
                    f"Attention expects tokens [B, N, D] (or packed [T, D] with groups), got {tuple(x.shape)}"
                )
            batch, tokens, dim = x.shape
            return self.forward(x.reshape(batch * tokens, dim), [(batch, tokens)]).view(batch, tokens, dim)
        qkv = self.qkv(x)  # [T, 3D]
        if self.use_xformers and qkv.is_cuda:
            out = self._attend_xformers(qkv, groups)
        else:
            out = self._attend_sdpa(qkv, groups)
        return self.proj_drop(self.proj(out))  # [T, D]

    def forward_first_token(self, x: Tensor) -> Tensor:
        """Attention output of the first token only: ``[B, N, D] -> [B, 1, D]``.

        Its query comes from token 0, keys and values from all tokens: what :meth:`forward` gives at position
        0, without the query, projection and output work for the other tokens (inference shortcut).
        """
        batch, tokens, dim = x.shape
        bias = self.qkv.bias
        q = F.linear(x[:, :1], self.qkv.weight[:dim], None if bias is None else bias[:dim])  # [B, 1, D]
        kv = F.linear(x, self.qkv.weight[dim:], None if bias is None else bias[dim:])  # [B, N, 2D]
        q = q.view(batch, 1, self.num_heads, self.head_dim).transpose(1, 2)  # [B, H, 1, hd]
        k, v = kv.view(batch, tokens, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)  # [B, H, 1, hd]
        return self.proj(out.transpose(1, 2).reshape(batch, 1, dim))

    def _attend_sdpa(self, qkv: Tensor, groups: Groups) -> Tensor:
        dropout_p = self.attn_drop if self.training else 0.0
        dim = qkv.shape[-1] // 3
        outs = []
        for part, (b, n) in zip(qkv.split([b * n for b, n in groups]), groups):
            q, k, v = part.view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)  # [b, H, n, hd]
            outs.append(out.transpose(1, 2).reshape(b * n, dim))
        return outs[0] if len(outs) == 1 else torch.cat(outs)  # [T, D]

    def _attend_xformers(self, qkv: Tensor, groups: Groups) -> Tensor:
        from xformers.ops import fmha

        dropout_p = self.attn_drop if self.training else 0.0
        total, dim = qkv.shape[0], qkv.shape[-1] // 3
        if len(groups) == 1:
            b, n = groups[0]
            q, k, v = qkv.view(b, n, 3, self.num_heads, self.head_dim).unbind(2)  # [b, n, H, hd]
            bias = None
        else:
            q, k, v = qkv.view(1, total, 3, self.num_heads, self.head_dim).unbind(2)  # [1, T, H, hd]
            bias = fmha.BlockDiagonalMask.from_seqlens([n for b, n in groups for _ in range(b)])
        out = fmha.memory_efficient_attention(q, k, v, attn_bias=bias, p=dropout_p)
        return out.reshape(total, dim)


class MemEffAttention(Attention):
    """The released name for the attention used by DINOv2 models; identical to :class:`Attention`."""


class CausalSelfAttention(Attention):
    """Self-attention of dino.txt's text blocks, released signature (DINOv3 ``layers.attention``; DINOv2's hub
    ``Attention`` of ``layers.block.CausalAttentionBlock``): :class:`Attention`'s constructor and keys (qkv without
    bias, projection with bias by default), causal unless ``forward(x, is_causal=False)``; ``attn_drop`` in the
    attention, ``proj_drop`` after the projection. ``[B, N, D] -> [B, N, D]``."""

    def forward(self, x: Tensor, is_causal: bool = True) -> Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        dropout = self.attn_drop if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=is_causal)  # [B, H, N, hd]
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(batch, tokens, dim)))
