"""Distillation through the real trainer: exports (student EMA as "teacher", raw student beside it, strict load
through the hub constructor), checkpoints without the teacher, bit-exact resume, refused resume after a teacher
file change."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from torch.distributed.checkpoint import FileSystemReader

from dinov2.hub.backbones import _make_dinov2_model, dinov2_vits14
from dinov2.train.checkpointing import EXTRA_FILE, Checkpointer
from dinov2.train.meta_archs import build_meta_arch
from dinov2.train.train import do_test, get_args_parser, main
from dinov2.utils.config import load_cfg
from tests.conftest import preserved_logging
from tests.train.distillation.tiny_distill import distill_cfg, distill_opts, teacher_run
from tests.train.test_train_loop import StopAfter
from tests.train.tiny import FP32_OPTS, TINY_OPTS


def _run(out: Path, teacher: tuple[Path, Path], *opts: str, history: list | None = None) -> list:
    dataset = f"Synthetic:root={out.parent}/data:num_classes=3:images_per_class=6:size=40x32"
    argv = ["--output-dir", str(out), *TINY_OPTS, *FP32_OPTS, f"train.dataset_path={dataset}"]
    argv += [*distill_opts(*teacher), "checkpointing.period=4", "evaluation.eval_period_iterations=4", *opts]
    history = [] if history is None else history
    main(get_args_parser().parse_args(argv), history=history)
    return history


def _exports(out: Path, name: str = "teacher_checkpoint.pth") -> dict[str, torch.Tensor]:
    return torch.load(out / "eval" / "training_7" / name, weights_only=True)["teacher"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> tuple[Path, Path]:
    config, export, _ = teacher_run(tmp_path_factory.mktemp("teacher"))
    return config, export


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, teacher):
    out = tmp_path_factory.mktemp("runs") / "straight"
    with preserved_logging():
        history = _run(out, teacher)
    return out, history


def test_exports_and_checkpoints(straight_run, teacher):
    out, history = straight_run
    assert [it for it, _ in history] == list(range(8))
    exports = sorted(f"{p.parent.name}/{p.name}" for p in out.glob("eval/*/*.pth"))
    names = ("student_checkpoint.pth", "teacher_checkpoint.pth")
    assert exports == [f"training_{it}/{name}" for it in (3, 7) for name in names]
    # checkpoints hold the student, its EMA and the loss centres, never the teacher; and the teacher's fingerprint
    keys = set(FileSystemReader(str(out / "model_0000007")).read_metadata().state_dict_metadata)
    assert not [k for k in keys if k.startswith("model.teacher.")]
    saved = {k.split(".")[1] for k in keys if k.startswith("model.")}
    assert saved == {"student", "model_ema", "dino_loss", "ibot_patch_loss"}
    extra = torch.load(out / "model_0000007" / EXTRA_FILE, weights_only=True)
    assert extra["stateful"]["distillation_teacher"]["crc32"] > 0
    # the exports are the checkpointed student EMA and student
    model = build_meta_arch(load_cfg(out / "config.yaml"))
    Checkpointer(out).load_latest(model.checkpoint_state())
    for name, module in (("teacher_checkpoint.pth", model.model_ema), ("student_checkpoint.pth", model.student)):
        exported, state = _exports(out, name), module.state_dict()
        assert exported.keys() == state.keys()
        assert all(torch.equal(exported[k], v) for k, v in state.items()), name
    assert not all(torch.equal(_exports(out)[k], v) for k, v in model.student.state_dict().items())
    # "teacher_checkpoint.pth" loads strictly through the hub constructor of the student's arch
    path = out / "eval" / "training_7" / "teacher_checkpoint.pth"
    hub = _make_dinov2_model(arch_name="vit_test", img_size=16, patch_size=4, weights=path)
    for key, value in hub.state_dict().items():
        assert torch.equal(value, model.model_ema.backbone.state_dict()[key]), key


def test_resume_is_bit_exact(straight_run, teacher, tmp_path):
    reference_out, reference = straight_run
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        _run(out, teacher, history=StopAfter(4))
    resumed = _run(out, teacher)
    assert [it for it, _ in resumed] == [4, 5, 6, 7]
    assert resumed == reference[4:]  # identical per-iteration losses
    for name in ("teacher_checkpoint.pth", "student_checkpoint.pth"):
        for (key, a), b in zip(_exports(out, name).items(), _exports(reference_out, name).values()):
            assert torch.equal(a, b), (name, key)


def test_resume_refuses_a_changed_teacher_file(teacher, tmp_path):
    config, export = teacher
    own = tmp_path / "teacher_checkpoint.pth"
    shutil.copy(export, own)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        _run(out, (config, own), history=StopAfter(4))
    state = torch.load(own, weights_only=True)
    state["teacher"]["dino_head.mlp.0.bias"] += 1.0  # same shapes, other weights
    torch.save(state, own)
    with pytest.raises(RuntimeError, match="distillation teacher changed since this run started"):
        _run(out, (config, own))


@pytest.mark.slow  # three ViT-S/14 at 518 px: ~10 s
def test_export_loads_into_the_released_hub_constructor(tmp_path):
    """A ViT-S/14 student exported at 518 px is a drop-in ``dinov2_vits14(weights=...)`` file."""
    hub_opts = ("student.patch_size=14", "crops.global_crops_size=518", "crops.local_crops_size=98")
    config, export, _ = teacher_run(tmp_path, *hub_opts)
    cfg = distill_cfg(tmp_path / "student", config, export, "student.arch=vit_small", *hub_opts)
    torch.manual_seed(0)
    model = build_meta_arch(cfg)
    with torch.no_grad():
        for p in model.model_ema.parameters():
            p.add_(torch.randn_like(p))
    path = do_test(cfg, model, "training_0")
    hub = dinov2_vits14(pretrained=True, weights=path)
    for key, value in hub.state_dict().items():
        assert torch.equal(value, model.model_ema.backbone.state_dict()[key]), key
