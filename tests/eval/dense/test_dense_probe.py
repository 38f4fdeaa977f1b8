"""Probe building blocks: mmcv learning-rate schedules, recipes, depth losses (released indexing), exact resume."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from dinov2.eval.dense import probe as dense_probe
from dinov2.eval.dense.train import learning_rate
from dinov2.eval.depth.losses import gradient_loss, sigloss
from dinov2.eval.depth.probe import CONFIG_DIR as DEPTH_CONFIGS
from dinov2.eval.depth.probe import out_index_for, start_alive
from dinov2.eval.segmentation import probe as segmentation_probe
from dinov2.eval.segmentation.probe import CONFIG_DIR as SEGMENTATION_CONFIGS
from dinov2.heads.depth.dpt import DPTHead
from tests.eval.conftest import CONFIG
from tests.eval.dense.resume_helpers import keep_checkpoint_at, resume_folder


def test_poly_and_cosine_schedules_with_linear_warmup():
    seg = dense_probe.load_recipe(SEGMENTATION_CONFIGS, "linear").optim
    assert learning_rate(0, seg, 40000) == pytest.approx(1e-3 * 1e-6)
    assert learning_rate(750, seg, 40000) == pytest.approx(1e-3 * (1 - 750 / 40000) * (0.5 + 0.5e-6))
    assert learning_rate(1500, seg, 40000) == pytest.approx(1e-3 * (1 - 1500 / 40000))
    assert learning_rate(40000, seg, 40000) == 0.0
    depth = dense_probe.load_recipe(DEPTH_CONFIGS, "dpt").optim
    target = 1e-4 * 1e-8
    assert learning_rate(19200, depth, 38400) == pytest.approx(target + 0.5 * (1e-4 - target))
    assert learning_rate(6400, depth, 38400) == pytest.approx(
        (target + 0.5 * (1e-4 - target) * (1 + math.cos(math.pi / 6))) * (1 - 0.5 * (1 - 1e-3))
    )
    assert learning_rate(38400, depth, 38400) == pytest.approx(target)


def test_recipes_merge_and_reject_unknown_keys(tmp_path):
    ms = dense_probe.load_recipe(SEGMENTATION_CONFIGS, "ms", ["optim.lr=0.002", "test.ratios=[1.0,1.5]"])
    assert ms.head.type == "ms" and ms.train.crop_size == [640, 640] and ms.optim.lr == 0.002
    assert ms.test.ratios == [1.0, 1.5] and ms.test.stride == [320, 320] and ms.train.iterations == 40000
    assert dense_probe.load_recipe(DEPTH_CONFIGS, "linear1").head.n_blocks == 1
    with pytest.raises(KeyError, match=r"'optim.lrr' \(did you mean 'optim.lr'"):
        dense_probe.load_recipe(SEGMENTATION_CONFIGS, "linear", ["optim.lrr=1"])
    custom = tmp_path / "mine.yaml"
    custom.write_text("train:\n  iterations: 7\n  crops: 3\n")
    with pytest.raises(KeyError, match="train.crops"):
        dense_probe.load_recipe(SEGMENTATION_CONFIGS, str(custom))
    with pytest.raises(FileNotFoundError, match="linear, ms"):
        dense_probe.load_recipe(SEGMENTATION_CONFIGS, "msx")
    with pytest.raises(ValueError, match="key=value"):
        dense_probe.load_recipe(SEGMENTATION_CONFIGS, "linear", ["optim.lr"])


def test_depth_head_blocks():
    assert out_index_for(12, 4) == [2, 5, 8, 11] and out_index_for(24, 4) == [4, 11, 17, 23]
    assert out_index_for(40, 1) == [39] and out_index_for(16, 4) == [3, 7, 11, 15]


@pytest.mark.parametrize("channels", [16, 256])
def test_a_fresh_dpt_probe_head_starts_above_its_relu(channels):
    """With the default init some starts (most narrow heads) output min_depth everywhere: no gradient, no training."""
    features = [(torch.randn(1, 32, 2, 2), torch.randn(1, 32)) for _ in range(4)]
    for seed in range(4):
        torch.manual_seed(seed)
        head = DPTHead(32, channels=channels)
        start_alive(head)
        with torch.no_grad():
            assert (head(features) > head.min_depth).all(), seed


def _released_gradient_loss(input, target):
    """The release's ``GradientLoss.gradientloss``, transcribed with its indexing (valid_mask, no max_depth)."""
    input_downscaled = [input] + [input[:: 2 * i, :: 2 * i] for i in range(1, 4)]
    target_downscaled = [target] + [target[:: 2 * i, :: 2 * i] for i in range(1, 4)]
    total = 0
    for inp, tgt in zip(input_downscaled, target_downscaled):
        mask = tgt > 0
        n = torch.sum(mask)
        diff = torch.mul(torch.log(inp + 0.001) - torch.log(tgt + 0.001), mask)
        v = torch.mul(torch.abs(diff[0:-2, :] - diff[2:, :]), torch.mul(mask[0:-2, :], mask[2:, :]))
        h = torch.mul(torch.abs(diff[:, 0:-2] - diff[:, 2:]), torch.mul(mask[:, 0:-2], mask[:, 2:]))
        total += (torch.sum(h) + torch.sum(v)) / n
    return total


def test_depth_losses():
    g = torch.Generator().manual_seed(0)
    pred, gt = torch.rand(3, 1, 20, 24, generator=g) + 0.5, torch.rand(3, 1, 20, 24, generator=g) * 5
    gt[gt < 0.5] = 0  # invalid pixels
    assert torch.allclose(gradient_loss(pred, gt, "released"), _released_gradient_loss(pred, gt))
    assert gradient_loss(pred[:2], gt[:2], "released") == 0  # two images: the released term vanishes
    spatial = gradient_loss(pred[:1], gt[:1], "spatial")  # what the release computes on a 2-D depth map
    assert torch.allclose(spatial, _released_gradient_loss(pred[0, 0], gt[0, 0])) and spatial > 0
    valid = gt > 0
    diff = torch.log(pred[valid] + 0.001) - torch.log(gt[valid] + 0.001)
    assert torch.allclose(sigloss(pred, gt), torch.sqrt(diff.var() + 0.15 * diff.mean() ** 2))
    assert torch.allclose(sigloss(pred, gt, warm_up=True), torch.sqrt(0.15 * diff.mean() ** 2))


@pytest.mark.slow
def test_resume_is_exact(single_process_eval, backbone_files, tmp_path, monkeypatch):
    root = tmp_path / "scenes"
    keys = f"SyntheticDense:root={root}:num_classes=2:images=8:val_images=2:size=40x30"
    argv = [
        "--config-file", CONFIG, "--pretrained-weights", str(backbone_files.hub), "--train-dataset", keys,
        "--val-dataset", f"{keys}:split=VAL", "train.iterations=4", "train.batch_size=2", "train.num_workers=0",
        "eval.num_workers=0", "checkpoint.period=2", "optim.warmup_iters=2", "optim.lr=0.01",
        "train.crop_size=[28,28]", "train.short_side=28", "test.crop_size=[28,28]", "test.stride=[14,14]",
        "test.short_side=null",
    ]  # fmt: skip
    keep_checkpoint_at(monkeypatch, 2, tmp_path / "at_2.pth")
    full = tmp_path / "full"
    segmentation_probe.main(segmentation_probe.get_args_parser().parse_args(["--output-dir", str(full), *argv]))
    resumed = resume_folder(tmp_path / "resumed", tmp_path / "at_2.pth")
    segmentation_probe.main(segmentation_probe.get_args_parser().parse_args(["--output-dir", str(resumed), *argv]))
    a = torch.load(full / "segmentation_linear_head.pth", weights_only=True)["state_dict"]
    b = torch.load(resumed / "segmentation_linear_head.pth", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert int(b["decode_head.bn.num_batches_tracked"]) == 4
    assert OmegaConf.load(resumed / "probe_config.yaml").train.iterations == 4


def test_an_unreadable_val_image_stops_the_probe_naming_it_while_training_skips(tmp_path):
    """issue 26: a substituted val image would silently change the metrics."""
    import argparse

    from dinov2.data.datasets import CorruptImageError
    from dinov2.data.datasets.synthetic_dense import make_synthetic_dense_dataset

    root = make_synthetic_dense_dataset(tmp_path / "scenes", num_classes=2, images=3, val_images=2, size=(40, 30))
    (root / "train" / "images" / "00000.png").write_bytes(b"not a png")
    (root / "val" / "images" / "00000.png").write_bytes(b"not a png")
    keys = f"SyntheticDense:root={root}:num_classes=2:images=3:val_images=2:size=40x30"
    args = argparse.Namespace(train_dataset_str=keys, val_dataset_str=f"{keys}:split=VAL")
    train, val = dense_probe.make_datasets(args, None, None, "segmentation", "SyntheticDense", None)
    train[0]  # skipped: the next readable scene comes instead
    with pytest.raises(CorruptImageError, match="00000.png"):
        val[0]


def test_a_head_too_small_for_the_labels_is_named(single_process_eval, backbone_files, tmp_path):
    """head.num_classes below the dataset's known classes: refused before training; labels the head cannot predict
    (a dataset whose classes are not known): the step that meets one names the key, not cross-entropy's index error."""
    from dinov2.eval.segmentation.probe import check_labels_fit

    keys = f"SyntheticDense:root={tmp_path / 'scenes'}:num_classes=2:images=3:val_images=2:size=40x30"
    argv = ["--config-file", CONFIG, "--pretrained-weights", str(backbone_files.hub), "--train-dataset", keys]
    argv += ["--val-dataset", f"{keys}:split=VAL", "--output-dir", str(tmp_path / "out"), "head.num_classes=2"]
    with pytest.raises(ValueError, match=r"head.num_classes=2 but .* has 3 classes \(labels 0..2\); set head.num_cla"):
        segmentation_probe.main(segmentation_probe.get_args_parser().parse_args(argv))
    # the same scenes as a folder that does not know its classes: the step that meets such a label names the key
    folder = f"SegmentationFolder:root={tmp_path / 'scenes' / 'train'}"
    argv = ["--config-file", CONFIG, "--pretrained-weights", str(backbone_files.hub), "--train-dataset", folder]
    argv += ["--val-dataset", folder, "--output-dir", str(tmp_path / "out2"), "head.num_classes=1"]
    argv += ["train.iterations=40", "train.batch_size=2", "train.num_workers=0", "train.crop_size=[28,28]"]
    with pytest.raises(ValueError, match=r"has label [12] but the head predicts 1 classes \(0..0\); set head.num_cl"):
        segmentation_probe.main(segmentation_probe.get_args_parser().parse_args(argv))
    labels = torch.tensor([[0, 1], [255, 3]])
    check_labels_fit(labels, 4, 255, "d")  # 255 is ignored
    with pytest.raises(ValueError, match=r"'d' has label 3 but the head predicts 3 classes .* at least 4"):
        check_labels_fit(labels, 3, 255, "d")
