"""Segmentation and depth probes end to end on the synthetic dense set (random ViT-S/14 backbone, CPU):
they beat trivial baselines by stated margins, write their results, resume, and export heads that load through
the hub entry points and reproduce the reported numbers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from dinov2.data.datasets import SyntheticDense
from dinov2.eval.depth import probe as depth_probe
from dinov2.eval.depth.metrics import DepthMetric
from dinov2.eval.segmentation import probe as segmentation_probe
from dinov2.eval.segmentation.metrics import SegmentationMetric
from dinov2.hub.depthers import dinov2_vits14_dd, dinov2_vits14_ld
from dinov2.hub.segmentors import dinov2_vits14_ade20k_linear
from tests.eval.conftest import CONFIG
from tests.eval.dense.resume_helpers import keep_checkpoint_at, resume_folder

SIZE, TRAIN_IMAGES, VAL_IMAGES, SHAPES = (64, 48), 32, 8, 4
SEGMENTATION_MARGIN = 15.0  # mIoU points above the best trivial predictor
DEPTH_RMSE_RATIO = 0.75  # at most this fraction of the mean-depth predictor's RMSE


@dataclass(frozen=True)
class DenseSet:
    root: Path
    keys: str

    def string(self, split: str, task: str) -> str:
        return f"SyntheticDense:{self.keys}:split={split}:task={task}"

    def dataset(self, split: str, task: str) -> SyntheticDense:
        return SyntheticDense(root=str(self.root), split=split, task=task, num_classes=SHAPES, images=TRAIN_IMAGES,
                              val_images=VAL_IMAGES, size=SIZE)  # fmt: skip


@pytest.fixture(scope="module")
def dense_set(tmp_path_factory) -> DenseSet:
    root = tmp_path_factory.mktemp("dense") / "scenes"
    keys = f"root={root}:num_classes={SHAPES}:images={TRAIN_IMAGES}:val_images={VAL_IMAGES}:size={SIZE[0]}x{SIZE[1]}"
    return DenseSet(root, keys)


def _argv(dense_set, task, weights, output_dir, recipe, overrides):
    return [
        "--config-file", CONFIG, "--pretrained-weights", str(weights), "--output-dir", str(output_dir),
        "--train-dataset", dense_set.string("TRAIN", task), "--val-dataset", dense_set.string("VAL", task),
        "--recipe", recipe, "train.batch_size=4", "train.num_workers=0", "eval.num_workers=0",
        "optim.warmup_iters=10", "log.period=20", "checkpoint.period=20", *overrides,
    ]  # fmt: skip


SEGMENTATION_OVERRIDES = [
    "train.iterations=60", "optim.lr=0.0003", "train.crop_size=[56,56]", "train.short_side=48",
    "test.crop_size=[56,56]", "test.stride=[28,28]", "test.short_side=48",
]  # fmt: skip


def _trivial_miou(labels: list[torch.Tensor], num_classes: int) -> float:
    """Best of: the majority class everywhere, uniformly random classes (in percent)."""
    majority, uniform = SegmentationMetric(num_classes), SegmentationMetric(num_classes)
    generator = torch.Generator().manual_seed(0)
    for label in labels:
        majority.update(torch.zeros_like(label), label)  # background is the most frequent class
        uniform.update(torch.randint(0, num_classes, label.shape, generator=generator), label)
    return 100.0 * max(majority.compute()["mIoU"], uniform.compute()["mIoU"])


@pytest.mark.slow
def test_segmentation_probe(single_process_eval, dense_set, backbone_files, tmp_path):
    argv = _argv(dense_set, "segmentation", backbone_files.hub, tmp_path, "linear", SEGMENTATION_OVERRIDES)
    detailed = segmentation_probe.main(segmentation_probe.get_args_parser().parse_args(argv))
    summary = json.loads((tmp_path / "results_eval_segmentation.json").read_text())
    assert set(summary) == {"mIoU", "mAcc", "aAcc"} and summary["mIoU"] == pytest.approx(detailed["mIoU"])
    assert len(detailed["IoU"]) == SHAPES + 1 and (tmp_path / "probe_config.yaml").is_file()
    labels = [torch.from_numpy(label) for _, label in dense_set.dataset("VAL", "segmentation")]
    trivial = _trivial_miou(labels, SHAPES + 1)
    assert summary["mIoU"] >= trivial + SEGMENTATION_MARGIN, (summary, trivial)
    print(f"segmentation probe mIoU {summary['mIoU']:.2f} vs best trivial {trivial:.2f}")

    # resuming a finished run re-evaluates the checkpoint: same numbers, no training
    again = segmentation_probe.main(segmentation_probe.get_args_parser().parse_args(argv))
    assert again["mIoU"] == pytest.approx(detailed["mIoU"], abs=1e-9)

    # the exported head (released format) loads through the hub and reproduces the mIoU
    head_file = tmp_path / "segmentation_linear_head.pth"
    assert set(torch.load(head_file, weights_only=True)["state_dict"]) == {
        "decode_head.conv_seg.weight", "decode_head.conv_seg.bias", "decode_head.bn.weight", "decode_head.bn.bias",
        "decode_head.bn.running_mean", "decode_head.bn.running_var", "decode_head.bn.num_batches_tracked",
    }  # fmt: skip
    model = dinov2_vits14_ade20k_linear(weights=str(head_file), backbone_weights=str(backbone_files.hub))
    assert model.num_classes == SHAPES + 1
    val = dense_set.dataset("VAL", "segmentation")
    metric = SegmentationMetric(SHAPES + 1)
    test = dict(crop_size=(56, 56), stride=(28, 28), short_side=48)
    with torch.no_grad():
        for image, label in val:
            tensor = segmentation_probe.make_dense_eval_transform("segmentation")(image, label)[0][None]
            metric.update(model.predict(tensor, **test), torch.from_numpy(label)[None])
    assert 100.0 * metric.compute()["mIoU"] == pytest.approx(summary["mIoU"], abs=1e-6)


DEPTH_OVERRIDES = [
    "train.iterations=120", "optim.lr=0.03", "train.crop_size=[48,56]", "train.nyu_crop=false", "test.crop=null",
    "loss.gradient_weight=0", "loss.sigloss_warmup_iters=0",
]  # fmt: skip


def _depth_baseline_rmse(dense_set) -> float:
    """RMSE of the best constant predictor the training set suggests (its mean depth) on the val set."""
    train, val = dense_set.dataset("TRAIN", "depth"), dense_set.dataset("VAL", "depth")
    mean_depth = float(np.mean([depth[depth > 0].mean() for _, depth in train]))
    baseline = DepthMetric(0.001, 10.0)
    for _, depth in val:
        gt = torch.from_numpy(depth)[None]
        baseline.update(torch.full_like(gt, mean_depth), gt)
    return baseline.compute()["rmse"]


@pytest.mark.slow
def test_depth_probe(single_process_eval, dense_set, backbone_files, tmp_path):
    argv = _argv(dense_set, "depth", backbone_files.hub, tmp_path, "linear4", DEPTH_OVERRIDES)
    depth_probe.main(depth_probe.get_args_parser().parse_args(argv))
    results = json.loads((tmp_path / "results_eval_depth.json").read_text())
    assert set(results) == {"a1", "a2", "a3", "abs_rel", "rmse", "log_10", "rmse_log", "silog", "sq_rel"}
    val = dense_set.dataset("VAL", "depth")
    baseline_rmse = _depth_baseline_rmse(dense_set)
    assert results["rmse"] <= DEPTH_RMSE_RATIO * baseline_rmse, (results, baseline_rmse)
    print(f"depth probe RMSE {results['rmse']:.3f} vs mean-depth predictor {baseline_rmse:.3f}")

    # the exported head loads through the hub (depth range from the file) and gives the same metrics
    head_file = tmp_path / "depth_linear4_head.pth"
    model = dinov2_vits14_ld(layers=4, weights=str(head_file), backbone_weights=str(backbone_files.hub)).eval()
    assert (model.decode_head.min_depth, model.decode_head.max_depth) == (0.001, 10.0)
    metric = DepthMetric(0.001, 10.0)
    with torch.no_grad():
        for image, depth in val:
            tensor = depth_probe.make_dense_eval_transform("depth")(image, depth)[0][None]
            pred = (model(tensor) + model(tensor.flip(-1)).flip(-1)) / 2
            metric.update(pred, torch.from_numpy(depth)[None])
    assert metric.compute()["rmse"] == pytest.approx(results["rmse"], rel=1e-6)


DPT_OVERRIDES = [
    "train.iterations=40", "optim.lr=0.003", "head.channels=16", "train.crop_size=[48,56]", "train.nyu_crop=false",
    "test.crop=null", "loss.gradient_weight=0", "loss.sigloss_warmup_iters=0", "checkpoint.period=20",
]  # fmt: skip


@pytest.mark.slow
def test_dpt_depth_probe_learns_resumes_exactly_and_loads_in_the_hub(
    single_process_eval, dense_set, backbone_files, tmp_path, monkeypatch
):
    """The DPT recipe (a narrow decoder): beats the mean-depth predictor, a run resumed from its iteration-20
    checkpoint ends with the same head, and the exported head loads through ``dinov2_vits14_dd``."""
    keep_checkpoint_at(monkeypatch, 20, tmp_path / "at_20.pth")
    full = tmp_path / "full"
    depth_probe.main(depth_probe.get_args_parser().parse_args(
        _argv(dense_set, "depth", backbone_files.hub, full, "dpt", DPT_OVERRIDES)))  # fmt: skip
    results = json.loads((full / "results_eval_depth.json").read_text())
    baseline_rmse = _depth_baseline_rmse(dense_set)
    assert results["rmse"] <= DEPTH_RMSE_RATIO * baseline_rmse, (results, baseline_rmse)

    resumed = resume_folder(tmp_path / "resumed", tmp_path / "at_20.pth")
    depth_probe.main(depth_probe.get_args_parser().parse_args(
        _argv(dense_set, "depth", backbone_files.hub, resumed, "dpt", DPT_OVERRIDES)))  # fmt: skip
    a = torch.load(full / "depth_dpt_head.pth", weights_only=True)["state_dict"]
    b = torch.load(resumed / "depth_dpt_head.pth", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    model = dinov2_vits14_dd(weights=str(full / "depth_dpt_head.pth"), backbone_weights=str(backbone_files.hub))
    assert (model.decode_head.min_depth, model.decode_head.max_depth) == (0.001, 10.0)
    metric = DepthMetric(0.001, 10.0)
    with torch.no_grad():
        for image, depth in dense_set.dataset("VAL", "depth"):
            tensor = depth_probe.make_dense_eval_transform("depth")(image, depth)[0][None]
            pred = (model.eval()(tensor) + model(tensor.flip(-1)).flip(-1)) / 2
            metric.update(pred, torch.from_numpy(depth)[None])
    assert metric.compute()["rmse"] == pytest.approx(results["rmse"], rel=1e-6)
