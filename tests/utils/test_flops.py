"""FLOP counting for throughput/MFU reports: the counted FLOPs equal the analytic ViT formula."""

from __future__ import annotations

import torch

from dinov2.models.vision_transformer import DinoVisionTransformer
from dinov2.train.ssl_meta_arch import Batch, SSLMetaArch
from dinov2.utils.flops import count_flops, vit_forward_flops
from tests.train.tiny import collate, random_samples, tiny_cfg


def test_counted_forward_flops_equal_the_analytic_vit_formula():
    model = DinoVisionTransformer(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2)
    x = torch.randn(3, 3, 16, 12)  # 4 x 3 patches: rectangular, interpolated position embeddings (not counted)
    flops, out = count_flops(model.forward_features, x)
    n_patches = 12
    expected = vit_forward_flops(3, 1 + n_patches, 32, 2, 4.0, patch_flops=2 * n_patches * 3 * 4 * 4 * 32)
    assert flops == expected and out["x_norm_clstoken"].shape == (3, 32)


def test_training_step_flops_cover_backward(tmp_path):
    cfg = tiny_cfg(tmp_path)
    model = SSLMetaArch(cfg)
    batch = Batch.from_collated(collate(random_samples(4, 2, seed=0), cfg, mask_probability=0.5), "cpu")
    teacher_flops, _ = count_flops(model.teacher_targets, batch, 0.05)
    student_flops, outputs = count_flops(model.student_outputs, batch)
    step_flops, _ = count_flops(model.forward_backward, batch, 0.05)
    # both forwards, then the student's backward: twice its forward, less the input gradient of the patch embedding
    backward = step_flops - teacher_flops - student_flops
    assert 1.8 * student_flops < backward <= 2 * student_flops
