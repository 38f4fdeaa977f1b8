"""The dino.txt text tower: the text transformer, an optional head (blocks, projection) and token pooling.

Keys (the released text-encoder file): ``backbone.*`` (:class:`~dinov2.text.text_transformer.TextTransformer`),
``head.linear_projection.weight`` (no bias). Pooling ``argmax`` reads the feature at the position of the largest
token id per row: the end-of-text token (49407, the largest id), so padding after it (causal attention) never counts.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dinov2.layers.block import CausalSelfAttentionBlock
from dinov2.text.token_head import TokenHead

__all__ = ["TextHead", "TextTower", "pool_text_tokens"]


class TextHead(TokenHead):
    """``num_blocks`` attention blocks + ``ln_final`` (identity without blocks) + a linear projection to
    ``embed_dim`` when the dims differ or when asked: ``[B, N, input_dim] -> [B, N, embed_dim]``."""

    def __init__(
        self,
        input_dim: int,
        embed_dim: int,
        num_heads: int,
        num_blocks: int,
        block_drop_prob: float,
        is_causal: bool,
        use_linear_projection: bool,
    ) -> None:
        blocks = [
            CausalSelfAttentionBlock(input_dim, num_heads, is_causal=is_causal, dropout_prob=block_drop_prob)
            for _ in range(num_blocks)
        ]
        use_projection = input_dim != embed_dim or use_linear_projection
        super().__init__(input_dim, blocks, (input_dim, embed_dim) if use_projection else None)
        self.input_dim = input_dim

    def forward(self, text_tokens: Tensor) -> Tensor:  # the released argument name
        return super().forward(text_tokens)

    @torch.no_grad()
    def init_weights(self) -> None:
        """Blocks as the text transformer's (one layer deep), projection N(0, input_dim^-1/2)."""
        dim = self.input_dim
        for block in self.block_list if self.num_blocks > 0 else ():
            block.init_weights(dim**-0.5, dim**-0.5 * (2 * self.num_blocks) ** -0.5, (2 * dim) ** -0.5)
        self.init_projection_and_norm()


def pool_text_tokens(text_tokens: Tensor, token_indices: Tensor, pooler_type: str) -> Tensor:
    """``[B, N, D] -> [B, D]``: token ``first`` / ``last``, or ``argmax`` (the position of the largest id)."""
    if pooler_type == "first":
        return text_tokens[:, 0]
    if pooler_type == "last":
        return text_tokens[:, -1]
    if pooler_type == "argmax":
        return text_tokens[torch.arange(text_tokens.shape[0], device=text_tokens.device), token_indices.argmax(dim=-1)]
    raise ValueError(f"unknown text tokens pooler type {pooler_type!r}; choose one of argmax, first, last")


class TextTower(nn.Module):
    """Text transformer ``backbone`` + :class:`TextHead`; ``forward(token_indices [B, N]) -> [B, embed_dim]``."""

    def __init__(
        self,
        backbone: nn.Module,
        freeze_backbone: bool,
        embed_dim: int,
        num_head_blocks: int,
        head_blocks_is_causal: bool,
        head_blocks_block_drop_prob: float,
        tokens_pooler_type: str,
        use_linear_projection: bool,
    ) -> None:
        super().__init__()
        if tokens_pooler_type not in ("argmax", "first", "last"):
            raise ValueError(f"unknown text tokens pooler type {tokens_pooler_type!r}; use argmax, first or last")
        self.backbone = backbone
        self.freeze_backbone = freeze_backbone
        self.head = TextHead(
            int(backbone.embed_dim),
            embed_dim,
            int(backbone.num_heads),
            num_head_blocks,
            head_blocks_block_drop_prob,
            head_blocks_is_causal,
            use_linear_projection,
        )
        self.tokens_pooler_type = tokens_pooler_type
        if freeze_backbone:
            backbone.requires_grad_(False)

    def init_weights(self) -> None:
        self.backbone.init_weights()
        self.head.init_weights()

    def forward(self, token_indices: Tensor) -> Tensor:
        text_tokens = self.head(self.backbone(token_indices))  # [B, N, embed_dim]
        return pool_text_tokens(text_tokens, token_indices, self.tokens_pooler_type)
