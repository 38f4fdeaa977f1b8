"""Pre-norm transformer block with layer-scale and (efficient) stochastic depth."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from dinov2.layers.attention import XFORMERS_AVAILABLE as XFORMERS_AVAILABLE  # the release's module flags
from dinov2.layers.attention import XFORMERS_ENABLED as XFORMERS_ENABLED
from dinov2.layers.attention import Attention, CausalSelfAttention
from dinov2.layers.drop_path import DropPath
from dinov2.layers.layer_scale import LayerScale
from dinov2.layers.mlp import Mlp
from dinov2.layers.packing import Groups, pack, per_token, unpack

# Blocks switch from per-sample DropPath to the subset method above this rate (SPEC.md section 1). The
# released multi-crop (list) path used the subset method for every rate > 0; we keep that difference.
EFFICIENT_DROP_PATH_THRESHOLD = 0.1
EFFICIENT_DROP_PATH_THRESHOLD_LIST = 0.0


def drop_add_residual_stochastic_depth(
    x: Tensor, residual_func: Callable[[Tensor], Tensor], sample_drop_ratio: float = 0.0
) -> Tensor:
    """``x + residual_func(x)`` where the branch runs on ``max(int(B * (1 - ratio)), 1)`` random samples only.

    ``x`` is ``[B, ...]``; the branch output of the kept samples is added back scaled by ``B / kept`` so the
    expected value equals ``x + residual_func(x)``; the other samples pass through unchanged.
    """
    batch = x.shape[0]
    keep = max(int(batch * (1 - sample_drop_ratio)), 1)
    kept = torch.randperm(batch, device=x.device)[:keep]  # [S]
    residual = residual_func(x[kept])  # [S, ...]
    out = torch.index_add(x.flatten(1), 0, kept, residual.flatten(1).to(x.dtype), alpha=batch / keep)
    return out.view_as(x)


def drop_add_residual_stochastic_depth_packed(
    x: Tensor, groups: Groups, residual_func: Callable[[Tensor, Groups], Tensor], sample_drop_ratio: float
) -> Tensor:
    """Packed-layout form of :func:`drop_add_residual_stochastic_depth`: one random image subset per group.

    ``x`` is ``[T, D]`` laid out as ``groups``; ``residual_func(x_subset, subset_groups)`` sees only the
    tokens of the kept images; group ``i``'s branch output is scaled by ``B_i / kept_i``.
    """
    rows, kept_groups, scales, offset = [], [], [], 0
    for b, n in groups:
        keep = max(int(b * (1 - sample_drop_ratio)), 1)
        images = torch.randperm(b, device=x.device)[:keep]  # [keep]
        rows.append((offset + images[:, None] * n + torch.arange(n, device=x.device)).reshape(-1))  # [keep * n]
        kept_groups.append((keep, n))
        scales.append(x.new_full((keep,), b / keep))
        offset += b * n
    rows = torch.cat(rows)  # [T']
    residual = residual_func(x[rows], kept_groups).to(x.dtype)  # [T', D]
    if len(groups) == 1:
        return torch.index_add(x, 0, rows, residual, alpha=groups[0][0] / kept_groups[0][0])
    return torch.index_add(x, 0, rows, residual * per_token(torch.cat(scales), kept_groups)[:, None])


class Block(nn.Module):
    """``x + ls1(attn(norm1(x)))`` then ``x + ls2(mlp(norm2(x)))``, each branch with stochastic depth.

    ``forward`` takes tokens ``[B, N, D]`` or a list of ``[B_i, N_i, D]`` (multi-crop); a list runs packed
    (see :mod:`dinov2.layers.packing`): per-token layers run once on all crops, attention never mixes images.
    In training, rate ``drop_path`` > 0.1 computes each branch for a random subset of the images only
    (efficient stochastic depth); smaller rates use per-sample :class:`DropPath`. Like the released code,
    the list path uses the subset method for any rate > 0.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        proj_bias: bool = True,
        ffn_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        init_values: float | None = None,
        drop_path: float = 0.0,
        act_layer: Callable[..., nn.Module] = nn.GELU,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
        attn_class: Callable[..., nn.Module] = Attention,
        ffn_layer: Callable[..., nn.Module] = Mlp,
        use_xformers: bool = False,
    ) -> None:
        super().__init__()
        attn_kwargs = {"use_xformers": True} if use_xformers else {}
        self.norm1 = norm_layer(dim)
        self.attn = attn_class(
            dim,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            proj_bias=proj_bias,
            attn_drop=attn_drop,
            proj_drop=drop,
            **attn_kwargs,
        )
        self.ls1 = LayerScale(dim, init_values=init_values) if init_values else nn.Identity()
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = norm_layer(dim)
        self.mlp = ffn_layer(
            in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer, drop=drop, bias=ffn_bias
        )
        self.ls2 = LayerScale(dim, init_values=init_values) if init_values else nn.Identity()
        self.drop_path2 = DropPath(drop_path)
        self.sample_drop_ratio = drop_path

    def forward(
        self, x: Tensor | list[Tensor], first_token_only: bool = False, groups: Groups | None = None
    ) -> Tensor | list[Tensor]:
        """Tokens ``[B, N, D]`` (or a list) -> same shape; ``first_token_only`` returns token 0 only, ``[B, 1, D]``.

        With ``groups``, ``x`` is already packed ``[T, D]`` (see :mod:`dinov2.layers.packing`) and the packed
        output ``[T, D]`` is returned: the backbone packs the crops once per forward instead of once per block.
        """
        if groups is not None:
            return self.forward_packed(x, groups, EFFICIENT_DROP_PATH_THRESHOLD_LIST)
        if isinstance(x, Tensor):
            if x.ndim != 3:
                raise ValueError(f"Block expects tokens [B, N, D] or a list of them, got shape {tuple(x.shape)}")
            if first_token_only:
                return self._forward_first_token(x)
            out = self.forward_packed(x.reshape(-1, x.shape[-1]), [(x.shape[0], x.shape[1])])
            return out.view(x.shape)
        packed, groups = pack(x)
        return unpack(self.forward_packed(packed, groups, EFFICIENT_DROP_PATH_THRESHOLD_LIST), groups)

    def forward_packed(
        self, x: Tensor, groups: Groups, efficient_threshold: float = EFFICIENT_DROP_PATH_THRESHOLD
    ) -> Tensor:
        """Run the block on packed tokens ``[T, D]`` laid out as ``groups``; returns ``[T, D]``."""
        if self.training and self.sample_drop_ratio > efficient_threshold:
            x = drop_add_residual_stochastic_depth_packed(x, groups, self._attn_residual, self.sample_drop_ratio)
            return drop_add_residual_stochastic_depth_packed(x, groups, self._ffn_residual, self.sample_drop_ratio)
        x = x + self.drop_path1(self._attn_residual(x, groups), groups)
        return x + self.drop_path2(self._ffn_residual(x, groups), groups)

    def _forward_first_token(self, x: Tensor) -> Tensor:
        """Output of token 0 only (``[B, 1, D]``): what a final block owes ``forward()``, which keeps the cls
        token alone; the other tokens skip their query, projection and FFN work."""
        if (self.training and self.sample_drop_ratio > 0.0) or not hasattr(self.attn, "forward_first_token"):
            return self.forward(x)[:, :1]
        x = x[:, :1] + self.ls1(self.attn.forward_first_token(self.norm1(x)))  # [B, 1, D]
        return x + self.ls2(self.mlp(self.norm2(x)))

    def _attn_residual(self, x: Tensor, groups: Groups) -> Tensor:
        return self.ls1(self.attn(self.norm1(x), groups))

    def _ffn_residual(self, x: Tensor, groups: Groups) -> Tensor:
        return self.ls2(self.mlp(self.norm2(x)))


class NestedTensorBlock(Block):
    """The released name of the block that also accepts a list of crops; identical to :class:`Block`."""

    def forward(
        self, x_or_x_list: Tensor | list[Tensor], first_token_only: bool = False, groups: Groups | None = None
    ) -> Tensor | list[Tensor]:
        """:meth:`Block.forward`, under the released argument name."""
        return super().forward(x_or_x_list, first_token_only, groups)

    def forward_nested(self, x_list: list[Tensor]) -> list[Tensor]:
        """The release's list path: crops ``[B_i, N_i, D]`` in, the same shapes out (packed here, see
        :meth:`Block.forward`; xformers is not required)."""
        return self.forward(list(x_list))


class CausalSelfAttentionBlock(nn.Module):
    """dino.txt's text block, released signature (DINOv3 ``CausalSelfAttentionBlock``, DINOv2 hub
    ``CausalAttentionBlock``): ``x + ls1(attention(attention_norm(x)))``, then ``x + ls2(feed_forward(ffn_norm(x)))``;
    LayerScale only with ``ls_init_value``. Keys ``attention_norm``, ``attention.{qkv, proj}``, ``ffn_norm``,
    ``feed_forward.{fc1, fc2}`` (+ ``ls1`` / ``ls2``)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ffn_ratio: float = 4.0,
        ls_init_value: float | None = None,
        is_causal: bool = True,
        act_layer: Callable[..., nn.Module] = nn.GELU,
        norm_layer: Callable[..., nn.Module] = nn.LayerNorm,
        dropout_prob: float = 0.0,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.is_causal = is_causal
        self.ls1 = LayerScale(dim, init_values=ls_init_value) if ls_init_value else nn.Identity()
        self.attention_norm = norm_layer(dim)
        self.attention = CausalSelfAttention(dim, num_heads, attn_drop=dropout_prob, proj_drop=dropout_prob)
        self.ffn_norm = norm_layer(dim)
        self.feed_forward = Mlp(dim, int(dim * ffn_ratio), act_layer=act_layer, drop=dropout_prob)
        self.ls2 = LayerScale(dim, init_values=ls_init_value) if ls_init_value else nn.Identity()

    @torch.no_grad()
    def init_weights(
        self,
        init_attn_std: float | None = None,
        init_proj_std: float | None = None,
        init_fc_std: float | None = None,
        factor: float = 1.0,
    ) -> None:
        """The released scheme: attention as :meth:`CausalSelfAttention.init_weights`, fc1 N(0, fc_std) (default
        ``(2 dim) ** -0.5``), fc2 N(0, proj_std); norms (and LayerScale) reset."""
        init_attn_std = init_attn_std or self.dim**-0.5
        init_proj_std = init_proj_std or init_attn_std * factor
        init_fc_std = init_fc_std or (2 * self.dim) ** -0.5
        self.attention.init_weights(init_attn_std, init_proj_std)
        nn.init.normal_(self.feed_forward.fc1.weight, std=init_fc_std)
        nn.init.normal_(self.feed_forward.fc2.weight, std=init_proj_std)
        for module in (self.attention_norm, self.ffn_norm, self.ls1, self.ls2):
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.ls1(self.attention(self.attention_norm(x), self.is_causal))
        return x + self.ls2(self.feed_forward(self.ffn_norm(x)))


CausalAttentionBlock = CausalSelfAttentionBlock  # the DINOv2 release's name (dinov2.layers.block)
