"""A tiny training set-up for fast tests: a 2-block ViT, small heads, small crops, collated random batches.

Importing this module registers the ``vit_test`` arch in the backbone registry (also in spawned processes,
which import it to unpickle the test functions).
"""

from __future__ import annotations

import random
from functools import partial

import numpy as np
import torch
from omegaconf import DictConfig

from dinov2.data import MaskingGenerator, collate_data_and_cast
from dinov2.models.vision_transformer import _vit, register_arch
from dinov2.train.ssl_meta_arch import Batch
from dinov2.utils.config import apply_scaling_rules_to_cfg, load_cfg

register_arch("vit_test", partial(_vit, 32, 2, 2), exist_ok=True)  # 32 dim, 2 blocks, 2 heads

GLOBAL_SIZE, LOCAL_SIZE, PATCH = 16, 8, 4
N_TOKENS = (GLOBAL_SIZE // PATCH) ** 2

TINY_OPTS = [
    "student.arch=vit_test",
    f"student.patch_size={PATCH}",
    "student.drop_path_rate=0.0",
    "student.layerscale=1.0",
    f"crops.global_crops_size={GLOBAL_SIZE}",
    f"crops.local_crops_size={LOCAL_SIZE}",
    "crops.local_crops_number=2",
    "dino.head_n_prototypes=64",
    "dino.head_hidden_dim=32",
    "dino.head_bottleneck_dim=16",
    "ibot.head_n_prototypes=48",
    "ibot.head_hidden_dim=32",
    "ibot.head_bottleneck_dim=16",
    "train.batch_size_per_gpu=4",
    "train.num_workers=0",
    "train.OFFICIAL_EPOCH_LENGTH=4",
    "optim.epochs=2",
    "optim.warmup_epochs=1",
    "teacher.warmup_teacher_temp_epochs=1",
    "optim.freeze_last_layer_epochs=1",
    "evaluation.eval_period_iterations=0",
]
_FP32 = "{sharding_strategy: NO_SHARD, mixed_precision: {param_dtype: fp32, reduce_dtype: fp32, buffer_dtype: fp32}}"
FP32_OPTS = [f"compute_precision.{role}.{m}={_FP32}" for role in ("student", "teacher") for m in
             ("backbone", "dino_head", "ibot_head")] + ["compute_precision.grad_scaler=false"]  # fmt: skip


def tiny_cfg(output_dir, *opts: str) -> DictConfig:
    """The tiny fp32 config, with extra ``key=value`` overrides applied last (and the lr scaling rule)."""
    return apply_scaling_rules_to_cfg(load_cfg(opts=[*TINY_OPTS, *FP32_OPTS, *opts], output_dir=str(output_dir)))


def random_samples(n_images: int, n_local: int, seed: int) -> list[tuple[dict, tuple]]:
    """``n_images`` augmentation outputs of random crops (what DataAugmentationDINO returns), with empty targets."""
    g = torch.Generator().manual_seed(seed)
    samples = []
    for _ in range(n_images):
        global_crops = [torch.randn(3, GLOBAL_SIZE, GLOBAL_SIZE, generator=g) for _ in range(2)]
        local_crops = [torch.randn(3, LOCAL_SIZE, LOCAL_SIZE, generator=g) for _ in range(n_local)]
        samples.append(({"global_crops": global_crops, "local_crops": local_crops}, ()))
    return samples


def collate(samples: list, cfg: DictConfig, seed: int = 0, mask_probability: float | None = None) -> dict:
    """Collate like the trainer does, with seeded masks."""
    random.seed(seed)
    np.random.seed(seed)
    grid = GLOBAL_SIZE // PATCH
    return collate_data_and_cast(
        samples,
        mask_ratio_tuple=tuple(cfg.ibot.mask_ratio_min_max),
        mask_probability=cfg.ibot.mask_sample_probability if mask_probability is None else mask_probability,
        dtype=torch.float32,
        n_tokens=N_TOKENS,
        mask_generator=MaskingGenerator(input_size=(grid, grid), max_num_patches=0.5 * grid * grid),
        local_crops_size=LOCAL_SIZE,
    )


def batch_for_images(full: dict, images: slice) -> Batch:
    """The collated batch restricted to a subset of images (crop-major layout kept, masks re-indexed)."""
    global_crops = full["collated_global_crops"]
    n_images = global_crops.shape[0] // 2
    n_local = full["collated_local_crops"].shape[0] // n_images

    def select(x: torch.Tensor, n_crops: int) -> torch.Tensor:
        return x.unflatten(0, (n_crops, n_images))[:, images].flatten(0, 1)

    masks = select(full["collated_masks"], 2)  # [2b, N]
    counts = masks.sum(-1, keepdim=True).clamp(min=1).float()
    weights = (1.0 / counts).expand_as(masks)[masks]
    indices = masks.flatten().nonzero().flatten()
    return Batch(
        global_crops=select(global_crops, 2),
        local_crops=select(full["collated_local_crops"], n_local),
        masks=masks,
        mask_indices=indices,
        masks_weight=weights,
        n_masked_patches=torch.tensor([indices.numel()]),
    )
