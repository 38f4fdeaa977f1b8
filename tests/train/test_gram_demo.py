"""``python -m dinov2.demo dinov3``: its three phase configs build their meta-architectures (training: by hand), and
a phase's run folder reopens in every tool through the backbone door."""

from __future__ import annotations

import pytest
import torch

from dinov2.config import load_cfg
from dinov2.config.checks import ConfigValueError
from dinov2.config.dinov3 import is_dinov3_form
from dinov2.demo_dinov3 import PHASES, phase_cfg, train_phase
from dinov2.features.backbone import load_backbone
from dinov2.train.meta_archs import build_meta_arch
from tests.conftest import preserved_logging


def test_demo_phases_build(tmp_path):
    previous = tmp_path / "teacher_checkpoint.pth"
    for phase in PHASES:
        cfg = phase_cfg(tmp_path, phase, None if phase == "ssl" else previous, [])
        assert is_dinov3_form(cfg), phase  # a DINOv3 config: DINOv3's defaults and heads
        model = build_meta_arch(cfg)
        assert (model.gram is None) == (phase == "ssl"), phase
        assert model.student.backbone.n_storage_tokens == 2 and model.student.backbone.embed_dim == 128
        if phase != "ssl":
            assert cfg.gram.ckpt == str(previous) and cfg.student.pretrained_weights == str(previous)
    assert cfg.crops.global_crops_size == [64, 96]
    assert cfg.optim.base_lr == 0.001  # the phase's optim.lr, DINOv3's base learning rate (x 4)


@pytest.fixture(scope="module")
def ssl_phase(tmp_path_factory):
    """Two iterations of the demo's first phase: (output directory, teacher export)."""
    out = tmp_path_factory.mktemp("demo3")
    tiny = ["optim.epochs=1", "train.OFFICIAL_EPOCH_LENGTH=2", "evaluation.eval_period_iterations=2"]
    with preserved_logging():
        export = train_phase(phase_cfg(out, "ssl", None, [*tiny, "train.num_workers=0"]), resume=False)
    return out, export


def test_a_phase_run_folder_reopens_through_the_backbone_door(ssl_phase):
    """Its folder opens with ``load_backbone`` (the eval commands, ``visualize``, the scripts) as the trained
    teacher, and its ``config.yaml`` loads as a DINOv3 config. Before, the demo's arch existed only inside the demo
    and its config was DINOv2's with DINOv3 student keys, which neither family's key check took ("unknown key
    student.n_storage_tokens")."""
    out, export = ssl_phase
    with preserved_logging():
        loaded = load_backbone(out / "ssl", device="cpu")
    assert (loaded.family, loaded.arch, loaded.embed_dim) == ("dinov3_vit", "vit_demo3", 128)
    assert loaded.num_extra_tokens == 3  # class token + 2 storage tokens
    teacher = torch.load(export, weights_only=True)["teacher"]
    for name, tensor in loaded.model.state_dict().items():  # rope_embed.periods: bf16 values, exported as fp32
        assert torch.equal(tensor.float(), teacher[f"backbone.{name}"].float()), name
    assert is_dinov3_form(load_cfg(out / "ssl" / "config.yaml"))


def test_the_dino_head_spread_probe_reads_a_dinov3_phase(ssl_phase):
    """``scripts/dino_head_spread.py`` (README, "The CPU demo") on a DINOv3 run: DINOv3's plain prototype layer bounds
    a logit by its rows' norm, 0.02 x sqrt(64) = 0.16 at init (DINOv2's weight-normalised rows: ~1), and the views
    must agree more than DINOv3's final T_teacher / T_student = 0.07 / 0.1 for the targets to sharpen."""
    from scripts import dino_head_spread

    out, export = ssl_phase
    crops = dino_head_spread.views(out / "ssl", out / "data" / "val", count=32)
    row = dino_head_spread.measure(out / "ssl", export, crops)
    assert row["threshold"] == pytest.approx(0.7), row
    assert row["proto_norm"] == pytest.approx(0.02 * 64**0.5, rel=0.1), row
    assert 0 <= row["sigma"] < 0.02 and row["H_pred"] > 0.99, row  # the head's logits: far below the temperature


def test_an_unknown_arch_with_dinov3_student_keys_is_named_as_the_problem():
    """The error names the arch and every family's archs, not the DINOv3 keys the DINOv2 defaults lack."""
    with pytest.raises(ConfigValueError, match=r"student.arch: got 'vit_nope'.*vit_demo3.*\(dinov3_vit\)"):
        load_cfg(None, ["student.arch=vit_nope", "student.n_storage_tokens=4"])


def test_a_bad_override_is_a_usage_error_before_any_training(tmp_path, capsys):
    from dinov2.demo_dinov3 import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--output-dir", str(tmp_path / "out"), "optim.epochz=1"])
    assert exit_info.value.code == 2
    assert "optim.epochz" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
