"""``python -m dinov2.demo dinov3``: its three phase configs build their meta-architectures (training: by hand)."""

from __future__ import annotations

from dinov2.demo_dinov3 import PHASES, demo_arch, phase_cfg
from dinov2.train.meta_archs import build_meta_arch


def test_demo_phases_build(tmp_path):
    previous = tmp_path / "teacher_checkpoint.pth"
    with demo_arch():
        for phase in PHASES:
            cfg = phase_cfg(tmp_path, phase, None if phase == "ssl" else previous, [])
            model = build_meta_arch(cfg)
            assert (model.gram is None) == (phase == "ssl"), phase
            assert model.student.backbone.n_storage_tokens == 2 and model.student.backbone.embed_dim == 128
            if phase != "ssl":
                assert cfg.gram.ckpt == str(previous) and cfg.student.pretrained_weights == str(previous)
    assert cfg.crops.global_crops_size == [64, 96]
