"""DINOv3 self-attention: rotary embedding on patch tokens only, and a qkv bias whose key third is masked out."""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dinov2.layers.attention import Attention
from dinov2.layers.block import Block, drop_add_residual_stochastic_depth

Rope = tuple[Tensor, Tensor]


def rope_rotate_half(x: Tensor) -> Tensor:
    """``[a, b] -> [-b, a]`` over the two halves of the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def rope_apply(x: Tensor, sin: Tensor, cos: Tensor) -> Tensor:
    """Rotate ``x`` ``[..., N, D_head]`` by the angles whose ``sin`` / ``cos`` are ``[N, D_head]``."""
    return x * cos + rope_rotate_half(x) * sin


def rope_signed_sin(sin: Tensor) -> Tensor:
    """``sin`` ``[N, D_head]`` with its first half negated, for :func:`rope_apply_`."""
    sin1, sin2 = sin.chunk(2, dim=-1)
    return torch.cat([-sin1, sin2], dim=-1)


def rope_apply_(x: Tensor, signed_sin: Tensor, cos: Tensor) -> Tensor:
    """:func:`rope_apply` in place on ``x`` ``[..., N, D_head]``, bit for bit, given ``rope_signed_sin(sin)``.

    The sign moves from the tokens to the table (``(-x2) * s == x2 * (-s)`` exactly: rounding is symmetric in
    sign), which saves negating half of ``x`` per call; working in place saves three of the four new tensors that
    :func:`rope_apply` allocates (each as large as ``x``). Gradients equal :func:`rope_apply`'s; ``x`` must be a
    tensor the caller owns (a copy), not a leaf that requires grad.
    """
    x1, x2 = x.chunk(2, dim=-1)
    swapped = torch.cat([x2, x1], dim=-1).mul_(signed_sin)  # rope_rotate_half(x) * sin
    return x.mul_(cos).add_(swapped)


class LinearKMaskedBias(nn.Linear):
    """A ``[D -> 3D]`` qkv linear whose bias is multiplied by the persistent buffer ``bias_mask`` ``[3D]``.

    :meth:`reset_bias_mask` (called by the models' ``init_weights``) sets the mask to 1 on the q and v thirds and 0
    on the k third (a key bias only adds a per-query constant to the logits, which softmax ignores). Without a bias
    there is no mask (the ViT-7B).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None) -> None:
        if out_features % 3:
            raise ValueError(f"LinearKMaskedBias: out_features={out_features} must be 3 * dim (q, k, v)")
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        if self.bias is not None:
            # NaN until reset_bias_mask (as released): a model used without initialising or loading it gives NaN
            # outputs instead of silently using a key bias.
            self.register_buffer("bias_mask", torch.full_like(self.bias, math.nan))

    def reset_bias_mask(self) -> None:
        """1 for q and v, 0 for k (nothing without a bias)."""
        if self.bias is None:
            return
        dim = self.out_features // 3
        self.bias_mask.fill_(1.0)
        self.bias_mask[dim : 2 * dim] = 0.0

    def forward(self, x: Tensor) -> Tensor:
        bias = self.bias * self.bias_mask.to(self.bias.dtype) if self.bias is not None else None
        return F.linear(x, self.weight, bias)


class RopeAttention(Attention):
    """Multi-head SDPA ``[B, N, D] -> [B, N, D]``; ``rope=(sin, cos)`` rotates q and k of the last ``HW`` tokens.

    :class:`~dinov2.layers.Attention`'s projections (same keys) with, when ``mask_k_bias``, a qkv linear whose key
    bias is masked. The first ``N - HW`` tokens (CLS and storage tokens) are never rotated. The rotation runs in
    the dtype of ``rope`` and q / k are cast back afterwards.
    """

    def __init__(self, dim: int, num_heads: int = 8, *, mask_k_bias: bool = False, **kwargs) -> None:
        super().__init__(dim, num_heads, **kwargs)  # qkv_bias, proj_bias, attn_drop, proj_drop as Attention's
        if mask_k_bias:
            self.qkv = LinearKMaskedBias(dim, dim * 3, bias=kwargs.get("qkv_bias", False))

    @staticmethod
    def apply_rope(q: Tensor, k: Tensor, rope: Rope) -> tuple[Tensor, Tensor]:
        """Rotate the patch part of q, k ``[B, heads, N, D_head]`` (prefix length ``N - HW``)."""
        sin, cos = rope
        prefix = q.shape[-2] - sin.shape[-2]
        if prefix < 0:
            raise ValueError(f"RoPE table has {sin.shape[-2]} positions for only {q.shape[-2]} tokens")

        signed_sin = rope_signed_sin(sin)  # shared by q and k

        def rotate(t: Tensor) -> Tensor:
            out = t.to(sin.dtype, memory_format=torch.contiguous_format, copy=True)  # a copy: never rotate the input
            rope_apply_(out[:, :, prefix:], signed_sin, cos)
            return out.to(t.dtype)

        return rotate(q), rotate(k)

    def forward(self, x: Tensor, rope: Rope | None = None) -> Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads)
        q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))  # [B, heads, N, D_head] each
        if rope is not None:
            q, k = self.apply_rope(q, k, rope)
        drop = self.attn_drop if self.training else 0.0
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=drop).transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(x))


class RopeBlock(Block):
    """Pre-norm block ``x + ls1(attn(norm1(x), rope))`` then ``x + ls2(mlp(norm2(x)))`` (DINOv3's block).

    :class:`~dinov2.layers.Block`'s modules (same keys) with :class:`RopeAttention`; ``ffn_ratio`` is DINOv3's
    name for ``mlp_ratio``, the other arguments are :class:`~dinov2.layers.Block`'s. Stochastic depth in training
    runs each branch on a random subset of ``max(int(B * (1 - drop_path)), 1)`` images and rescales it, as the
    release does for any rate > 0.
    """

    def __init__(
        self, dim: int, num_heads: int, ffn_ratio: float = 4.0, *, mask_k_bias: bool = False, **kwargs
    ) -> None:
        attn_class = partial(RopeAttention, mask_k_bias=mask_k_bias)
        super().__init__(dim, num_heads, mlp_ratio=ffn_ratio, attn_class=attn_class, **kwargs)

    def forward(self, x: Tensor, rope: Rope | None = None) -> Tensor:
        """Tokens ``[B, N, D]`` (prefix tokens first, then the ``HW`` patches of ``rope``) -> ``[B, N, D]``."""

        def attn_residual(t: Tensor) -> Tensor:
            return self.ls1(self.attn(self.norm1(t), rope=rope))

        def ffn_residual(t: Tensor) -> Tensor:
            return self.ls2(self.mlp(self.norm2(t)))

        if self.training and self.sample_drop_ratio > 0.0:
            x = drop_add_residual_stochastic_depth(x, attn_residual, self.sample_drop_ratio)
            return drop_add_residual_stochastic_depth(x, ffn_residual, self.sample_drop_ratio)
        x = x + attn_residual(x)
        return x + ffn_residual(x)
