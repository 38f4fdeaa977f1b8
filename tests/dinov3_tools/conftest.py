"""Fixtures of the DINOv3-in-every-tool tests: a tiny DINOv3 ViT and a tiny ConvNeXt saved as weights files (the
backbone door reads their architecture from the weights), a few image files, single-threaded torch.

The ViT is the hub ``dinov3_vits16`` recipe (4 storage tokens, masked key bias, RoPE) at 64 dims, 2 blocks, 2 heads,
with layer scale 1 and random class / storage tokens (the released initialisation, layer scale 1e-5 and tokens near
0, gives every image nearly the same class token and flat attention maps); the ConvNeXt has one block per stage
and widths 8-16-32-64.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dinov2.hub.backbones import make_backbone
from tests.eval.conftest import single_process_eval, synthetic  # noqa: F401  (shared fixtures)
from tests.models.conftest import _single_thread  # noqa: F401  (autouse fixture: one thread)

VIT = dict(depth=2, embed_dim=64, num_heads=2, layerscale_init=1.0)  # released 1e-5 barely moves the tokens
CONVNEXT = dict(depths=[1, 1, 1, 1], dims=[8, 16, 32, 64])


@dataclass(frozen=True)
class Dinov3Files:
    vit: Path
    convnext: Path
    images: list[str]

    def of(self, family: str) -> Path:
        return self.vit if family == "vit" else self.convnext


def tiny_vit() -> torch.nn.Module:
    torch.manual_seed(0)
    model = make_backbone("dinov3_vits16", pretrained=False, **VIT)
    with torch.no_grad():
        model.cls_token.normal_()
        model.storage_tokens.normal_()
    return model.eval()


def tiny_convnext() -> torch.nn.Module:
    torch.manual_seed(0)
    return make_backbone("dinov3_convnext_tiny", pretrained=False, **CONVNEXT).eval()


@pytest.fixture(scope="session")
def dinov3_files(tmp_path_factory) -> Dinov3Files:
    folder = tmp_path_factory.mktemp("dinov3_tools")
    torch.save(tiny_vit().state_dict(), folder / "vit.pth")
    torch.save(tiny_convnext().state_dict(), folder / "convnext.pth")
    rng = np.random.default_rng(0)
    images = []
    for i, size in enumerate([(50, 70), (64, 64)]):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
        images.append(str(folder / f"img{i}.png"))
    return Dinov3Files(folder / "vit.pth", folder / "convnext.pth", images)
