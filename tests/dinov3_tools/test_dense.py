"""Linear segmentation and linear depth probes on a DINOv3 ViT (``get_intermediate_layers`` with the released
signature), set up around a backbone from the backbone door: trained, evaluated, heads written."""

from __future__ import annotations

import json

import pytest
import torch

from dinov2.eval.dense import probe as dense_probe
from dinov2.eval.dense.probe import probe_on_backbone
from dinov2.eval.depth import probe as depth_probe
from dinov2.eval.segmentation import probe as segmentation_probe
from dinov2.features import load_backbone

SIZE = (48, 64)
KEYS = f"num_classes=3:images=8:val_images=2:size={SIZE[0]}x{SIZE[1]}"


def _args(parser, root, task, output_dir, recipe, overrides):
    dataset = f"SyntheticDense:root={root}:{KEYS}:task={task}"
    argv = [
        "--config-file",
        "unused.yaml",
        "--pretrained-weights",
        "unused.pth",
        "--output-dir",
        str(output_dir),
        "--train-dataset",
        f"{dataset}:split=TRAIN",
        "--val-dataset",
        f"{dataset}:split=VAL",
        "--recipe",
        recipe,
        "train.batch_size=4",
        "train.num_workers=0",
        "eval.num_workers=0",
        "optim.warmup_iters=2",
        "log.period=5",
        "checkpoint.period=5",
        "train.iterations=6",
        *overrides,
    ]
    return parser.parse_args(argv)


def test_linear_segmentation_and_depth_probes_on_a_dinov3_vit(dinov3_files, single_process_eval, tmp_path):
    loaded = load_backbone(dinov3_files.vit, device="cpu")
    root = tmp_path / "scenes"
    overrides = [
        "train.crop_size=[32,48]",
        "train.short_side=48",
        "test.crop_size=[32,48]",
        "test.stride=[16,16]",
        "test.short_side=48",
    ]
    args = _args(segmentation_probe.get_args_parser(), root, "segmentation", tmp_path / "seg", "linear", overrides)
    probe = probe_on_backbone(loaded.model, args, "segmentation")
    detailed = segmentation_probe.main(args, probe)
    assert len(detailed["IoU"]) == 4 and 0.0 <= detailed["mIoU"] <= 100.0
    head = torch.load(tmp_path / "seg" / "segmentation_linear_head.pth", weights_only=True)["state_dict"]
    assert head["decode_head.conv_seg.weight"].shape == (4, 64, 1, 1)  # the ViT's width, 3 shapes + background

    overrides = ["train.crop_size=[32,48]", "train.nyu_crop=false", "test.crop=null", "loss.gradient_weight=0"]
    args = _args(depth_probe.get_args_parser(), root, "depth", tmp_path / "depth", "linear1", overrides)
    depth_probe.main(args, probe_on_backbone(loaded.model, args, "depth"))
    results = json.loads((tmp_path / "depth" / "results_eval_depth.json").read_text())
    assert results["rmse"] > 0 and 0.0 <= results["a1"] <= 1.0
    head = torch.load(tmp_path / "depth" / "depth_linear_head.pth", weights_only=True)["state_dict"]
    assert head["decode_head.conv_depth.weight"].shape[1] == 2 * 64  # patch and class token of the last block


def test_a_convnext_segmentation_probe_taps_its_stages_and_depth_names_the_one_width_rule(
    dinov3_files, single_process_eval, tmp_path
):
    loaded = load_backbone(dinov3_files.convnext, device="cpu")
    root = tmp_path / "scenes"
    overrides = ["train.crop_size=[64,64]", "train.short_side=64", "test.mode=whole", "test.short_side=64"]
    args = _args(segmentation_probe.get_args_parser(), root, "segmentation", tmp_path / "seg", "ms", overrides)
    detailed = segmentation_probe.main(args, probe_on_backbone(loaded.model, args, "segmentation"))
    assert 0.0 <= detailed["mIoU"] <= 100.0
    head = torch.load(tmp_path / "seg" / "segmentation_ms_head.pth", weights_only=True)["state_dict"]
    assert head["decode_head.conv_seg.weight"].shape == (4, 8 + 16 + 32 + 64, 1, 1)  # the four stage widths

    recipe = dense_probe.load_recipe(depth_probe.CONFIG_DIR, "linear4")
    with pytest.raises(ValueError, match="taps of one width.*tap its last stage only"):
        depth_probe.build_depther(loaded.model, recipe.head)
