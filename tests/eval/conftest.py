"""Fixtures of the end-to-end evaluation tests: a tiny synthetic dataset and a ViT-S/14 backbone saved to disk.

The backbone has random weights (seeded) in the released hub layout (patch 14, 518 px position table,
layer-scale), saved twice: as a hub state dict and as a training export (``{"teacher": {"backbone.…"}}``
with chunked block names and head weights), so both loading paths can be compared. Images are 40 x 40 and
evaluated at 28 x 28 (2 x 2 patches) to keep a ViT-S forward at a few milliseconds per image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from dinov2 import distributed
from dinov2.models.convert import flat_to_chunked
from dinov2.models.vision_transformer import vit_small
from tests.conftest import torch_threads

CLASSES, TRAIN_PER_CLASS, VAL_PER_CLASS = 4, 12, 4
CONFIG = "dinov2/configs/eval/vits14_pretrain.yaml"  # the released path; resolved to our packaged copy
CROP = ["--crop-size", "28"]  # resize 32 (= 28 * 256 / 224), centre crop 28


@dataclass(frozen=True)
class SyntheticSet:
    root: Path
    train: str  # dataset strings
    val: str


@dataclass(frozen=True)
class BackboneFiles:
    hub: Path  # plain state dict, hub layout
    teacher: Path  # training export: {"teacher": {"backbone.blocks.<chunk>.<i>...", "dino_head...."}}
    state_dict: dict


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory) -> SyntheticSet:
    from dinov2.data.datasets.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("eval_data") / "synthetic"
    make_synthetic_dataset(root, CLASSES, TRAIN_PER_CLASS, size=(40, 40), seed=0, val_images_per_class=VAL_PER_CLASS)
    keys = f"root={root}:num_classes={CLASSES}:images_per_class={TRAIN_PER_CLASS}"
    keys += f":val_images_per_class={VAL_PER_CLASS}:size=40x40"
    return SyntheticSet(root, f"Synthetic:{keys}:split=TRAIN", f"Synthetic:{keys}:split=VAL")


@pytest.fixture(scope="session")
def backbone_files(tmp_path_factory) -> BackboneFiles:
    torch.manual_seed(0)
    state_dict = vit_small(patch_size=14, img_size=518, init_values=1.0, block_chunks=0).state_dict()
    folder = tmp_path_factory.mktemp("eval_weights")
    torch.save(state_dict, folder / "dinov2_vits14_pretrain.pth")
    chunked = flat_to_chunked(state_dict, depth=12, block_chunks=4)
    teacher = {f"backbone.{k}": v for k, v in chunked.items()}
    teacher["dino_head.mlp.0.weight"] = torch.zeros(8, 384)  # heads are dropped by the loader
    torch.save({"teacher": teacher}, folder / "teacher_checkpoint.pth")
    return BackboneFiles(folder / "dinov2_vits14_pretrain.pth", folder / "teacher_checkpoint.pth", state_dict)


@pytest.fixture(scope="session")
def eval_model(backbone_files):
    """The fixture backbone built as the eval scripts build it (from the eval config and the hub file), on CPU."""
    from dinov2.eval.setup import build_model_for_eval
    from dinov2.utils.config import load_cfg

    return build_model_for_eval(load_cfg(CONFIG), str(backbone_files.hub), device=torch.device("cpu"))


@pytest.fixture
def single_process_eval():
    """In-process ``main()`` runs: one thread and the distributed state forgotten afterwards (logging is restored by
    the autouse ``restore_logging`` of tests/conftest.py)."""
    with torch_threads(1):
        yield
    distributed.disable()
