"""The dino.txt text encoder: a causal transformer over CLIP BPE tokens (trained from scratch).

Keys (the released text-encoder file, under ``backbone.``): ``token_embedding.weight [V, D]``,
``positional_embedding [C, D]``, ``blocks.{i}.{attention_norm, attention.qkv, attention.proj, ffn_norm,
feed_forward.fc1, feed_forward.fc2}.*``, ``ln_final.*``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from dinov2.layers.attention import CausalSelfAttention
from dinov2.layers.block import CausalSelfAttentionBlock

__all__ = ["CausalSelfAttention", "CausalSelfAttentionBlock", "TextTransformer"]


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
        ls_init_value: float | None = None,
        act_layer: Callable[..., nn.Module] = nn.GELU,
        norm_layer: Callable[..., nn.Module] = nn.LayerNorm,
        dropout_prob: float = 0.0,
    ) -> None:
        super().__init__()
        # What rebuilds it (written into dino.txt files; None with another act_layer / norm_layer, which a
        # weights-only file cannot name: such a model is not written, see dinov2.hub.dinotxt)
        plain = act_layer is nn.GELU and norm_layer is nn.LayerNorm
        self.arch_kwargs = (
            dict(
                context_length=context_length,
                vocab_size=vocab_size,
                dim=dim,
                num_heads=num_heads,
                num_layers=num_layers,
                ffn_ratio=ffn_ratio,
                is_causal=is_causal,
                ls_init_value=ls_init_value,
                dropout_prob=dropout_prob,
            )
            if plain
            else None
        )
        self.context_length = context_length
        self.vocab_size = vocab_size
        self.embed_dim = dim
        self.num_heads = num_heads
        self.num_layers = num_layers
        self.token_embedding = nn.Embedding(vocab_size, dim)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, dim))
        self.dropout = nn.Dropout(dropout_prob)
        self.blocks = nn.ModuleList(
            CausalSelfAttentionBlock(
                dim, num_heads, ffn_ratio, ls_init_value, is_causal, act_layer, norm_layer, dropout_prob
            )
            for _ in range(num_layers)
        )
        self.ln_final = norm_layer(dim)
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
