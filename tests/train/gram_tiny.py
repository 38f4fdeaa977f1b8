"""A tiny DINOv3 set-up for the Gram anchoring / high-resolution tests: a 2-block RoPE ViT (32 dim, patch 4).

Importing this module adds the ``vit_test3`` arch to the DINOv3 ViT family (also in spawned processes). The configs
are the tiny DINOv2 config with the DINOv3 student keys and list-valued crop sizes set on the loaded config (the
trainer takes them; the loader would choose DINOv3's defaults, whose tiny version these tests do not need).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from dinov2 import distributed
from dinov2.models.dinov3_families import register_vit_arch
from dinov2.utils.utils import fix_random_seeds
from tests.conftest import torch_threads
from tests.train.tiny import tiny_cfg

# Module level: the SIGKILL test's subprocess imports this module to build the same student.
register_vit_arch("vit_test3", 32, 2, 2, 4.0, exist_ok=True)

V3_STUDENT = {
    "arch": "vit_test3",
    "n_storage_tokens": 1,
    "pos_embed_rope_jitter_coords": 2.0,
    "pos_embed_rope_rescale_coords": 2.0,
    "pos_embed_rope_shift_coords": 0.1,
}

# Two resolutions (global 16 / 24 px at patch 4), the Gram teacher at 1.5x; a Gram teacher copied from the EMA
# teacher at iteration 2 and refreshed at the start of iterations 4 and 6.
HIGH_RES = {
    "crops": {
        "global_crops_size": [16, 24],
        "local_crops_size": [8, 12],
        "gram_teacher_crops_size": [24, 36],
        "global_local_crop_pairs_ratios": [0.5, 0.5],
        "gram_teacher_no_distortions": True,
    },
    "gram": {
        "use_loss": True,
        "img_level": True,
        "loss_weight": 2.0,
        "it_load_ema_teacher": 2,
        "update_frequency": 2,
        "it_first_update": 3,
        "max_updates": 2,
    },
}


def v3_cfg(output_dir, *opts: str, extra: dict | None = None) -> DictConfig:
    """The tiny fp32 config with the tiny DINOv3 student and ``extra`` (a nested dict) merged on top."""
    cfg = tiny_cfg(output_dir, *opts)
    OmegaConf.set_struct(cfg, False)
    return OmegaConf.merge(cfg, {"student": V3_STUDENT}, extra or {})


def dataset_opt(root: Path) -> str:
    return f"Synthetic:root={root}/data:num_classes=3:images_per_class=6:size=40x32"


def train(cfg: DictConfig, history: list | None = None, no_resume: bool = False) -> list:
    """Train ``cfg`` like ``dinov2/train/train.py`` does after ``setup`` (the config is used as it is), on one CPU
    thread: runs compared bit for bit (one of them a subprocess with ``OMP_NUM_THREADS=1``) must reduce in the same
    order whatever thread count earlier tests left."""
    from dinov2.train.train import run

    distributed.enable(overwrite=True)
    fix_random_seeds(cfg.train.seed + distributed.get_global_rank())  # as setup() seeds
    Path(cfg.train.output_dir).mkdir(parents=True, exist_ok=True)
    history = [] if history is None else history
    with torch_threads(1):
        run(cfg, argparse.Namespace(eval_only=False, no_resume=no_resume), history=history)
    return history


def high_res_cfg(output_dir: Path, data_root: Path, n_iterations: int = 8) -> DictConfig:
    """The Gram-anchored two-resolution run of ``n_iterations`` (4 per epoch), checkpoints every 4 iterations, with
    DINOv3's other crop options on (one colour jitter per image, local crops cut from the global crops)."""
    opts = [
        f"train.dataset_path={dataset_opt(data_root)}",
        "checkpointing.period=4",
        f"optim.epochs={n_iterations // 4}",
        "crops.share_color_jitter=true",
        "crops.localcrops_subset_of_globalcrops=true",
    ]
    return v3_cfg(output_dir, *opts, extra=HIGH_RES)


def checkpoint_tensors(cfg: DictConfig, output_dir: Path, iteration: int) -> dict[str, torch.Tensor]:
    """Every model tensor (student, teacher, Gram teacher, centres) of the run's checkpoint of ``iteration``."""
    from dinov2.train.dcp_state import dcp_load_into
    from dinov2.train.meta_archs import build_meta_arch

    model = build_meta_arch(cfg)
    dcp_load_into({"model": model}, None, Path(output_dir) / f"model_{iteration:07d}")
    return {k: v.clone() for k, v in model.state_dict().items()}
