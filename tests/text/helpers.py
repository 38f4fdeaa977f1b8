"""Tiny dino.txt models shared by the text, hub, eval and visualize tests (random weights, CPU)."""

from __future__ import annotations

import contextlib
import functools

import numpy as np
import torch
from PIL import Image

from dinov2.hub import catalog
from dinov2.models.families import get_family
from dinov2.models.vision_transformer import DinoVisionTransformer
from dinov2.text import TEXT_1280D20H24L, DinoTxt, TextTransformer, released_config

TINY_TEXT = dict(TEXT_1280D20H24L, dim=32, num_heads=4, num_layers=2)  # the released vocabulary and context


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


TINY_HUB_NAME = "dinotxt_test_tiny_reg"


@contextlib.contextmanager
def tiny_hub_backbone():
    """A hub backbone name for :func:`tiny_backbone` (dinov2_vit family, no released weights) inside the block."""
    family = get_family("dinov2_vit")
    kwargs = dict(img_size=28, patch_size=14, init_values=1.0, block_chunks=0, num_register_tokens=4)
    entry = catalog.HubBackbone(TINY_HUB_NAME, "dinov2_vit", "vit_dinotxt_test", kwargs)
    arch = functools.partial(DinoVisionTransformer, embed_dim=32, depth=2, num_heads=4)
    with family.archs.registered("vit_dinotxt_test", arch), catalog.registered_backbone(entry):
        yield entry


def make_image_folder(root, classes=("red", "blue"), per_class: int = 3, size: int = 32):
    """``root/<class>/<i>.png``: flat colour images (red / blue / green...) with a little noise."""
    colours = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30)}
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(np.array(colours[name]) + rng.integers(-20, 20, (size, size, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i}.png")
    return root


def write_tiny_files(root, seed: int = 3):
    """``(model, dino.txt file, backbone file)``: a tiny model saved under the hub name :data:`TINY_HUB_NAME`."""
    from dinov2.hub import dinotxt

    model = tiny_dinotxt(seed=seed)
    with tiny_hub_backbone():
        dinotxt.save_dinotxt(model, root / "tiny_dinotxt.pth", TINY_HUB_NAME)
    torch.save(model.visual_model.backbone.state_dict(), root / "backbone.pth")
    return model, root / "tiny_dinotxt.pth", root / "backbone.pth"
