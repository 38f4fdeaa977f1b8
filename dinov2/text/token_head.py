"""What the vision and text heads of dino.txt share: blocks, a final norm (identity without blocks), an optional
linear projection (no bias), applied to every token. Keys: ``block_list.{i}.*``, ``ln_final.*``,
``linear_projection.weight``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["TokenHead"]


class TokenHead(nn.Module):
    """``blocks`` (none: one identity, as released) -> ``ln_final`` -> ``linear_projection``: ``[B, N, D_in] ->
    [B, N, D_out]``; ``projection`` is ``(in, out)`` or None (identity)."""

    def __init__(self, input_dim: int, blocks: list[nn.Module], projection: tuple[int, int] | None) -> None:
        super().__init__()
        self.num_blocks = len(blocks)
        self.ln_final: nn.Module = nn.LayerNorm(input_dim) if blocks else nn.Identity()  # registered first, as released
        self.block_list = nn.ModuleList(blocks or [nn.Identity()])
        self.linear_projection: nn.Module = nn.Identity()
        if projection is not None:
            self.linear_projection = nn.Linear(*projection, bias=False)

    @torch.no_grad()
    def init_projection_and_norm(self) -> None:
        """Final norm reset, projection N(0, in_features^-1/2) (the released initialisation of both heads)."""
        if self.num_blocks > 0:
            self.ln_final.reset_parameters()
        if isinstance(self.linear_projection, nn.Linear):
            nn.init.normal_(self.linear_projection.weight, std=self.linear_projection.in_features**-0.5)

    def forward(self, tokens: Tensor) -> Tensor:
        for block in self.block_list:
            tokens = block(tokens)
        return self.linear_projection(self.ln_final(tokens))
