"""Tiny dino.txt models shared by the text, hub, eval and visualize tests (random weights, CPU)."""

from __future__ import annotations

import torch

from dinov2.models.vision_transformer import DinoVisionTransformer
from dinov2.text import DinoTxt, TextTransformer, released_config

TINY_TEXT = dict(
    context_length=77,
    vocab_size=49408,
    dim=32,
    num_heads=4,
    num_layers=2,
    ffn_ratio=4.0,
    is_causal=True,
    ls_init_value=None,
    dropout_prob=0.0,
)


def tiny_backbone(num_register_tokens: int = 4, depth: int = 2) -> DinoVisionTransformer:
    """A ViT with the DINOv2 reg layout: dim 32, 4 heads, patch 14, 28 px position table."""
    return DinoVisionTransformer(
        img_size=28,
        patch_size=14,
        embed_dim=32,
        depth=depth,
        num_heads=4,
        init_values=1.0,
        block_chunks=0,
        num_register_tokens=num_register_tokens,
    ).eval()


def tiny_dinotxt(seed: int = 0, **config) -> DinoTxt:
    """The released configuration over :func:`tiny_backbone` (embed dim 64) with a tiny text transformer; head
    weights randomised beyond their initialisation (LayerScale 1e-5 would hide the blocks)."""
    torch.manual_seed(seed)
    model = DinoTxt(released_config(64, **config), tiny_backbone(), TextTransformer(**TINY_TEXT))
    model.init_weights()
    with torch.no_grad():
        for name, param in model.visual_model.head.named_parameters():
            if "ls" in name or "bias" in name:
                param.normal_(0, 0.3)
    return model.eval()
