"""The dino.txt vision tower: a frozen backbone, a trainable head of attention blocks over its tokens, pooling.

Image embedding = [head CLS ‖ pooled head patch tokens] (2 x backbone dim; a linear projection only when that is not
``embed_dim`` or when asked). The head has no positional encoding; its blocks are pre-norm ViT blocks (qkv without
bias, LayerScale 1e-5, SwiGLU with separate ``w1`` / ``w2`` / ``w3`` and hidden width aligned to 64). Key names are the
released head file's: ``block_list.{i}.*``, ``ln_final.*`` (``linear_projection.weight`` when projecting).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn

from dinov2.layers import Block, LayerScale, SwiGLUFFNSplit
from dinov2.text.backbone_tokens import backbone_tokens, check_token_backbone, num_register_tokens
from dinov2.text.token_head import TokenHead

__all__ = ["VisionHead", "VisionTower", "POOLERS", "init_weights_vit_timm", "pool_patch_tokens"]


def init_weights_vit_timm(module: nn.Module, name: str = "") -> None:
    """The released head initialisation of one module: trunc-normal 0.02 linears with zero bias; norms, LayerScale
    and convolutions reset (``name`` unused, for ``named_apply``)."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.LayerNorm, LayerScale, nn.Conv2d)):
        module.reset_parameters()


class VisionHead(TokenHead):
    """``num_blocks`` attention blocks + ``ln_final`` (identity without blocks) + optional projection to
    ``embed_dim // multiplier``: ``[B, N, input_dim] -> [B, N, out]``."""

    def __init__(
        self,
        input_dim: int,
        embed_dim: int,
        num_heads: int,
        num_blocks: int,
        blocks_drop_path: float,
        use_class_token: bool,
        use_patch_tokens: bool,
        use_linear_projection: bool,
    ) -> None:
        ffn = partial(SwiGLUFFNSplit, align_to=64)
        blocks = [
            Block(input_dim, num_heads, ffn_layer=ffn, init_values=1e-5, drop_path=blocks_drop_path)
            for _ in range(num_blocks)
        ]
        multiplier = 2 if use_class_token and use_patch_tokens else 1
        projection = None
        if multiplier * input_dim != embed_dim or use_linear_projection:
            if embed_dim % multiplier:
                raise ValueError(f"embed_dim {embed_dim} must be divisible by {multiplier} (class + patch features)")
            projection = (input_dim, embed_dim // multiplier)
        super().__init__(input_dim, blocks, projection)

    def forward(self, image_tokens: Tensor) -> Tensor:  # the released argument name
        return super().forward(image_tokens)

    @torch.no_grad()
    def init_weights(self) -> None:
        """The released initialisation (training from scratch)."""
        for block in self.block_list if self.num_blocks > 0 else ():
            block.apply(init_weights_vit_timm)
        self.init_projection_and_norm()


def _gem(patch_tokens: Tensor, power: float = 3.0, eps: float = 1e-6) -> Tensor:
    return patch_tokens.clamp(min=eps).pow(power).mean(dim=1).pow(1 / power)


POOLERS = {
    "mean": lambda tokens: tokens.mean(dim=1),
    "max": lambda tokens: tokens.max(dim=1).values,
    "gem": _gem,  # generalised mean, p = 3
}


def pool_patch_tokens(patch_tokens: Tensor, pooler_type: str) -> Tensor:
    """``[B, HW, D] -> [B, D]`` with the pooler ``mean`` / ``max`` / ``gem``."""
    if pooler_type not in POOLERS:
        raise ValueError(f"unknown patch tokens pooler type {pooler_type!r}; choose one of {sorted(POOLERS)}")
    return POOLERS[pooler_type](patch_tokens)


class VisionTower(nn.Module):
    """Frozen ``backbone`` (a DINOv2 / DINOv3 ViT) + :class:`VisionHead`; ``forward(images) -> [B, embed_dim]``."""

    def __init__(
        self,
        backbone: nn.Module,
        freeze_backbone: bool,
        embed_dim: int,
        num_head_blocks: int,
        head_blocks_block_drop_path: float,
        use_class_token: bool,
        use_patch_tokens: bool,
        patch_token_layer: int,
        patch_tokens_pooler_type: str,
        use_linear_projection: bool,
    ) -> None:
        super().__init__()
        check_token_backbone(backbone)
        if not (use_class_token or use_patch_tokens):
            raise ValueError("the vision tower needs use_class_token or use_patch_tokens (both False given)")
        if patch_tokens_pooler_type not in POOLERS:
            raise ValueError(f"unknown patch tokens pooler type {patch_tokens_pooler_type!r}; use {sorted(POOLERS)}")
        self.backbone = backbone
        self.freeze_backbone = freeze_backbone
        self.use_class_token = use_class_token
        self.use_patch_tokens = use_patch_tokens
        self.patch_token_layer = patch_token_layer
        self.patch_tokens_pooler_type = patch_tokens_pooler_type
        self.num_register_tokens = num_register_tokens(backbone)
        self.head = VisionHead(
            int(backbone.embed_dim),
            embed_dim,
            int(backbone.num_heads),
            num_head_blocks,
            head_blocks_block_drop_path,
            use_class_token,
            use_patch_tokens,
            use_linear_projection,
        )
        if freeze_backbone:
            backbone.requires_grad_(False)

    def init_weights(self) -> None:
        """Initialise the head (and the backbone when it is trained too)."""
        if not self.freeze_backbone:
            self.backbone.init_weights()
        self.head.init_weights()

    def train(self, mode: bool = True) -> VisionTower:
        super().train(mode)
        if self.freeze_backbone:  # a frozen backbone always runs in eval mode (no drop path, no RoPE jitter)
            self.backbone.eval()
        return self

    def get_backbone_features(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(cls [B, D] of the last block, patches [B, HW, D], registers [B, R, D])``: CLS from the last block,
        patches and registers from the ``patch_token_layer``-th last (the same block when it is 1)."""
        tokens = backbone_tokens(self.backbone, images, self.patch_token_layer)
        return tokens[-1][1], tokens[0][0], tokens[0][2]

    def get_class_and_patch_tokens(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Head outputs ``(cls [B, D'], patches [B, HW, D'])`` (register tokens dropped)."""
        class_token, patch_tokens, register_tokens = self.get_backbone_features(images)
        image_tokens = self.head(torch.cat([class_token.unsqueeze(1), register_tokens, patch_tokens], dim=1))
        return image_tokens[:, 0], image_tokens[:, self.num_register_tokens + 1 :]

    def forward(self, images: Tensor) -> Tensor:
        class_token, patch_tokens = self.get_class_and_patch_tokens(images)
        features = [class_token] if self.use_class_token else []
        if self.use_patch_tokens:
            features.append(pool_patch_tokens(patch_tokens, self.patch_tokens_pooler_type))
        return torch.cat(features, dim=-1)  # [B, embed_dim]
