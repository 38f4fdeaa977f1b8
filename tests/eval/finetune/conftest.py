"""Fixtures of the fine-tuning tests: a tiny registered DINOv2 arch, tiny DINOv2 / DINOv3 backbone files and a
generated labelled image set (coloured shapes, 4 classes) on which a random frozen backbone is weak."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from dinov2.models.vision_transformer import _vit, registered_arch
from dinov2.models.vision_transformer_v3 import DinoVisionTransformerV3

ARCH = "vit_finetune_test"  # 32 dim, 2 blocks, 2 heads
CLASSES, TRAIN_PER_CLASS, VAL_PER_CLASS = 4, 24, 16


def _tiny_vit(patch_size: int = 16, num_register_tokens: int = 0, **kwargs):
    return _vit(32, 2, 2, patch_size, num_register_tokens, **kwargs)


@dataclass(frozen=True)
class ShapesSet:
    train: str  # dataset strings
    val: str


@pytest.fixture(scope="module")
def tiny_arch():
    """The tiny DINOv2 arch, registered while a module's tests run (the door infers it from weights alone); not for
    the session: other tests list the registered archs."""
    with registered_arch(ARCH, _tiny_vit):
        yield ARCH


@pytest.fixture(scope="session")
def shapes(tmp_path_factory) -> ShapesSet:
    from dinov2.data.datasets.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("finetune_data") / "shapes"
    options = dict(size=(40, 40), seed=0, val_images_per_class=VAL_PER_CLASS, class_colours=True)
    make_synthetic_dataset(root, CLASSES, TRAIN_PER_CLASS, **options)
    keys = f"root={root}:num_classes={CLASSES}:images_per_class={TRAIN_PER_CLASS}"
    keys += f":val_images_per_class={VAL_PER_CLASS}:size=40x40:class_colours=true"
    return ShapesSet(f"Synthetic:{keys}:split=TRAIN", f"Synthetic:{keys}:split=VAL")


@pytest.fixture(scope="module")
def v2_weights(tiny_arch, tmp_path_factory) -> Path:
    """A random (seeded) tiny DINOv2 ViT, patch 8, 32 px table, LayerScale, one register, as a hub-layout file."""
    torch.manual_seed(0)
    model = _tiny_vit(patch_size=8, img_size=32, init_values=1.0, num_register_tokens=1)
    path = tmp_path_factory.mktemp("finetune_weights") / "tiny_v2.pth"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def v3_weights(tmp_path_factory) -> Path:
    """A random tiny DINOv3 ViT (RoPE, two storage tokens, LayerScale) as a teacher export."""
    torch.manual_seed(0)
    options = dict(n_storage_tokens=2, layerscale_init=1e-5, pos_embed_rope_dtype="fp32")
    model = DinoVisionTransformerV3(patch_size=8, embed_dim=32, depth=2, num_heads=2, **options)
    model.init_weights()
    path = tmp_path_factory.mktemp("finetune_weights") / "tiny_v3.pth"
    torch.save({"teacher": {f"backbone.{key}": value for key, value in model.state_dict().items()}}, path)
    return path
