"""Tiny distillation set-ups: a 48-dim, 3-block teacher (``vit_test_t``) distilled into the 32-dim ``vit_test``.

Importing this module registers ``vit_test_t`` (also in spawned processes, which import it to unpickle test
functions). Teacher files are written the way a real run writes them (``export_teacher`` of an ``SSLMetaArch``).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
from omegaconf import OmegaConf

from dinov2.models.vision_transformer import _vit, register_arch
from dinov2.train.checkpointing import export_teacher
from dinov2.train.ssl_meta_arch import SSLMetaArch
from tests.train.tiny import tiny_cfg

register_arch("vit_test_t", partial(_vit, 48, 3, 3), exist_ok=True)  # 48 dim, 3 blocks, 3 heads

SK = "train.centering=sinkhorn_knopp"


def teacher_run(tmp_path: Path, *opts: str, seed: int = 7) -> tuple[Path, Path, SSLMetaArch]:
    """An SSL model of the teacher arch with perturbed (so: not the student's init) teacher weights; returns
    (its config file, its teacher export, the model)."""
    folder = tmp_path / "teacher_run"
    folder.mkdir(parents=True, exist_ok=True)
    cfg = tiny_cfg(folder, "student.arch=vit_test_t", SK, *opts)
    torch.manual_seed(seed)
    model = SSLMetaArch(cfg)
    with torch.no_grad():
        for p in model.teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    OmegaConf.save(cfg, folder / "config.yaml")
    export = export_teacher(folder / "teacher_checkpoint.pth", model.teacher)
    return folder / "config.yaml", export, model


def distill_opts(teacher_config: Path, teacher_file: Path | str, *opts: str) -> list[str]:
    """Overrides that turn the tiny config into a distillation of the given teacher."""
    return [
        "distillation.enabled=true",
        f"distillation.full_cfg_path={teacher_config}",
        f"distillation.checkpoint_path={teacher_file}",
        SK,
        *opts,
    ]


def distill_cfg(tmp_path: Path, teacher_config: Path, teacher_file: Path | str, *opts: str):
    return tiny_cfg(tmp_path, *distill_opts(teacher_config, teacher_file, *opts))
