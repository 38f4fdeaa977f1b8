"""The head warm-up and backbone lr ramp of ``adapt.*`` in the trainer: the backbone frozen bit for bit in phase A
(teacher backbone = student backbone), moving in phase B, and an exact resume across the phase boundary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dinov2.models.vision_transformer import ARCHS
from dinov2.models.weights import resize_pos_embed
from dinov2.train.adapt import Adaptation
from dinov2.train.train import get_args_parser, main
from tests.conftest import preserved_logging
from tests.train.test_train_loop import StopAfter
from tests.train.tiny import FP32_OPTS, GLOBAL_SIZE, PATCH, TINY_OPTS

WARMUP = 3  # iterations 0-2 train the heads only; checkpoints and exports after 1, 3, 5, 7
GUARD = [
    "adapt.collapse_guard.period_iterations=2",
    "adapt.collapse_guard.action=stop",
    "adapt.collapse_guard.max_target_entropy=0.98",
    "adapt.collapse_guard.min_cls_std=0.01",
]


def _run(output_dir: Path, pretrained: Path, *opts: str, history: list | None = None) -> list:
    dataset = f"Synthetic:root={output_dir.parent}/data:num_classes=3:images_per_class=6:size=40x32"
    history = [] if history is None else history
    opts = [
        *TINY_OPTS,
        *FP32_OPTS,
        f"train.dataset_path={dataset}",
        f"student.pretrained_weights={pretrained}",
        f"adapt.head_warmup_iterations={WARMUP}",
        "adapt.backbone_lr_ramp_iterations=2",
        "optim.warmup_epochs=0",
        "checkpointing.period=2",
        "evaluation.eval_period_iterations=2",
        *opts,
    ]
    with preserved_logging():
        main(get_args_parser().parse_args(["--output-dir", str(output_dir), *opts]), history=history)
    return history


def _export(output_dir: Path, iteration: int) -> dict[str, torch.Tensor]:
    path = output_dir / "eval" / f"training_{iteration}" / "teacher_checkpoint.pth"
    return torch.load(path, weights_only=True)["teacher"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A 'released' backbone file (its position table twice the run's size) and what the run should start from."""
    torch.manual_seed(11)
    source = ARCHS["vit_test"](
        patch_size=PATCH, img_size=2 * GLOBAL_SIZE, init_values=1.0, block_chunks=0, num_register_tokens=0
    )
    path = tmp_path_factory.mktemp("released") / "backbone.pth"
    torch.save(source.state_dict(), path)
    start = dict(source.state_dict())
    start["pos_embed"] = resize_pos_embed(source.pos_embed.detach(), (GLOBAL_SIZE // PATCH) ** 2 + 1)
    return path, start


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, pretrained):
    out = tmp_path_factory.mktemp("adapt") / "straight"
    return out, _run(out, pretrained[0], *GUARD)


def test_backbone_lr_factor_over_the_phases():
    adaptation = Adaptation(head_warmup_iterations=3, backbone_lr_ramp_iterations=2)
    assert [adaptation.backbone_lr_factor(i) for i in range(6)] == [0.0, 0.0, 0.0, 0.5, 1.0, 1.0]
    assert Adaptation(0, 0).backbone_lr_factor(0) == 1.0


def test_phase_a_keeps_the_backbone_and_trains_the_heads_then_phase_b_moves_it(straight_run, pretrained):
    out, history = straight_run
    assert [it for it, _ in history] == list(range(8))
    start = pretrained[1]
    in_warmup, later = _export(out, 1), _export(out, 5)
    for key, value in start.items():  # the teacher backbone is the (frozen) student backbone, bit for bit
        assert torch.equal(in_warmup[f"backbone.{key}"], value), key
    assert any(not torch.equal(later[f"backbone.{k}"], v) for k, v in start.items())
    heads = [k for k in in_warmup if k.startswith("dino_head.")]
    assert any(not torch.equal(in_warmup[k], _export(out, 3)[k]) for k in heads)
    records = [json.loads(line) for line in (out / "training_metrics.json").read_text().splitlines()]
    guard = [r for r in records if "guard_target_entropy" in r]  # a healthy run: measured, never stopped
    assert [r["iteration"] for r in guard] == [1, 3, 5, 7]
    assert all(r["guard_target_entropy"] < 0.98 and r["guard_cls_std"] > 0.01 for r in guard)


def test_a_run_resumed_inside_the_warmup_crosses_the_boundary_exactly(straight_run, pretrained, tmp_path):
    reference_out, reference = straight_run
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        _run(out, pretrained[0], *GUARD, history=StopAfter(2))  # stopped after the checkpoint of iteration 1
    resumed = _run(out, pretrained[0], *GUARD)
    assert [it for it, _ in resumed] == list(range(2, 8))
    assert resumed == reference[2:]
    final, expected = _export(out, 7), _export(reference_out, 7)
    assert final.keys() == expected.keys()
    assert all(torch.equal(final[k], v) for k, v in expected.items())


def test_the_adapted_export_opens_through_the_backbone_door_and_the_dense_probes(straight_run):
    from dinov2.eval.setup import build_model_for_eval
    from dinov2.features import load_backbone
    from dinov2.utils.config import load_cfg

    out, _ = straight_run
    export = _export(out, 7)
    expected = {k.removeprefix("backbone."): v for k, v in export.items() if k.startswith("backbone.")}
    export_file = out / "eval" / "training_7" / "teacher_checkpoint.pth"
    for model in (
        load_backbone(out, device="cpu").model,  # the run folder: its config and newest export
        load_backbone(config=out / "config.yaml", weights=export_file, device="cpu").model,
        build_model_for_eval(load_cfg(out / "config.yaml", validate=False), str(export_file)),  # the dense probes'
    ):
        state_dict = model.state_dict()
        assert all(torch.equal(state_dict[k], v) for k, v in expected.items())
    maps = model.get_intermediate_layers(torch.randn(1, 3, GLOBAL_SIZE, GLOBAL_SIZE), n=1, reshape=True)
    assert maps[0].shape == (1, 32, GLOBAL_SIZE // PATCH, GLOBAL_SIZE // PATCH)


def test_the_adapted_export_is_a_distillation_teacher(straight_run, tmp_path):
    from dinov2.train.meta_archs import build_meta_arch
    from tests.train.tiny import tiny_cfg

    out, _ = straight_run
    export_file = out / "eval" / "training_7" / "teacher_checkpoint.pth"
    cfg = tiny_cfg(
        tmp_path,
        "distillation.enabled=true",
        "MODEL.META_ARCHITECTURE=DistillationMetaArch",
        f"distillation.full_cfg_path={out / 'config.yaml'}",
        f"distillation.checkpoint_path={export_file}",
    )
    model = build_meta_arch(cfg)
    teacher = model.teacher.state_dict()
    for key, value in _export(out, 7).items():
        assert torch.equal(teacher[key], value), key
