"""The dino.txt text encoder: a causal transformer over CLIP BPE tokens (trained from scratch).

Keys (the released text-encoder file, under ``backbone.``): ``token_embedding.weight [V, D]``,
``positional_embedding [C, D]``, ``blocks.{i}.{attention_norm, attention.qkv, attention.proj, ffn_norm,
feed_forward.fc1, feed_forward.fc2}.*``, ``ln_final.*``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dinov2.layers import LayerScale, Mlp

__all__ = ["CausalSelfAttention", "CausalSelfAttentionBlock", "TextTransformer"]


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention (qkv without bias, projection with bias), causal when ``is_causal``:
    ``[B, N, D] -> [B, N, D]``."""

    def __init__(self, dim: int, num_heads: int, is_causal: bool = True, dropout_prob: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"text dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.is_causal = is_causal
        self.dropout_prob = dropout_prob
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        dropout = self.dropout_prob if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=self.is_causal)  # [B, H, N, hd]
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class CausalSelfAttentionBlock(nn.Module):
    """Pre-norm block: ``x + attention(norm(x))``, then ``x + mlp(norm(x))`` (exact GELU), optional LayerScale."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ffn_ratio: float = 4.0,
        ls_init_value: float | None = None,
        is_causal: bool = True,
        dropout_prob: float = 0.0,
    ) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(dim)
        self.attention = CausalSelfAttention(dim, num_heads, is_causal, dropout_prob)
        self.ls1 = LayerScale(dim, ls_init_value) if ls_init_value else nn.Identity()
        self.ffn_norm = nn.LayerNorm(dim)
        self.feed_forward = Mlp(dim, int(dim * ffn_ratio), drop=dropout_prob)
        self.ls2 = LayerScale(dim, ls_init_value) if ls_init_value else nn.Identity()

    @torch.no_grad()
    def init_weights(self, init_attn_std: float, init_proj_std: float, init_fc_std: float) -> None:
        """The released scheme: qkv N(0, attn_std), attention projection and fc2 N(0, proj_std), fc1 N(0, fc_std)."""
        nn.init.normal_(self.attention.qkv.weight, std=init_attn_std)
        nn.init.normal_(self.attention.proj.weight, std=init_proj_std)
        nn.init.zeros_(self.attention.proj.bias)
        nn.init.normal_(self.feed_forward.fc1.weight, std=init_fc_std)
        nn.init.normal_(self.feed_forward.fc2.weight, std=init_proj_std)
        for module in (self.attention_norm, self.ffn_norm, self.ls1, self.ls2):
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.ls1(self.attention(self.attention_norm(x)))
        return x + self.ls2(self.feed_forward(self.ffn_norm(x)))


class TextTransformer(nn.Module):
    """Token ids ``[B, N]`` (N <= ``context_length``) -> token features ``[B, N, dim]`` (after ``ln_final``)."""

    def __init__(
        self,
        context_length: int,
        vocab_size: int,
        dim: int,
        num_heads: int,
        num_layers: int,
        ffn_ratio: float,
        is_causal: bool,
        ls_init_value: float | None,
        dropout_prob: float,
    ) -> None:
        super().__init__()
        self.arch_kwargs = dict(
            context_length=context_length,
            vocab_size=vocab_size,
            dim=dim,
            num_heads=num_heads,
            num_layers=num_layers,
            ffn_ratio=ffn_ratio,
            is_causal=is_causal,
            ls_init_value=ls_init_value,
            dropout_prob=dropout_prob,
        )  # what rebuilds it (written into dino.txt files)
        self.context_length = context_length
        self.vocab_size = vocab_size
        self.embed_dim = dim
        self.num_heads = num_heads
        self.num_layers = num_layers
        self.token_embedding = nn.Embedding(vocab_size, dim)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, dim))
        self.dropout = nn.Dropout(dropout_prob)
        self.blocks = nn.ModuleList(
            CausalSelfAttentionBlock(dim, num_heads, ffn_ratio, ls_init_value, is_causal, dropout_prob)
            for _ in range(num_layers)
        )
        self.ln_final = nn.LayerNorm(dim)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """The released initialisation (training from scratch)."""
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        attn_std = self.embed_dim**-0.5
        proj_std = attn_std * (2 * self.num_layers) ** -0.5
        fc_std = (2 * self.embed_dim) ** -0.5
        for block in self.blocks:
            block.init_weights(attn_std, proj_std, fc_std)
        self.ln_final.reset_parameters()

    def forward(self, token_indices: Tensor) -> Tensor:
        tokens = token_indices.shape[1]
        if tokens > self.context_length:
            raise ValueError(
                f"text of {tokens} tokens is longer than the context length {self.context_length}; "
                "tokenize with context_length <= that (the tokenizer truncates)"
            )
        x = self.dropout(self.token_embedding(token_indices) + self.positional_embedding[:tokens])  # [B, N, D]
        for block in self.blocks:
            x = block(x)
        return self.ln_final(x)
