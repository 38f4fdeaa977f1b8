"""The segmentation probe on 2 CPU processes (gloo): DDP head, validation split across ranks without duplicates,
areas summed: the reported mIoU equals a one-process evaluation of the exported head."""

from __future__ import annotations

import pytest
import torch

from dinov2.data.datasets.synthetic_dense import make_synthetic_dense_dataset
from dinov2.data.dense_transforms import make_dense_eval_transform
from dinov2.eval.segmentation.metrics import SegmentationMetric
from dinov2.hub.segmentors import dinov2_vits14_voc2012_linear
from tests.dist_helpers import run_distributed
from tests.eval.conftest import CONFIG

TEST = dict(crop_size=(28, 28), stride=(14, 14), short_side=None)


def _probe_worker(rank, world_size, argv):
    from dinov2.eval.segmentation import probe

    torch.set_num_threads(1)
    return probe.main(probe.get_args_parser().parse_args(argv))["mIoU"]


@pytest.mark.slow
def test_two_process_probe_reports_what_one_process_measures(backbone_files, tmp_path):
    root = make_synthetic_dense_dataset(tmp_path / "scenes", num_classes=2, images=8, val_images=5, size=(40, 30))
    keys = f"SyntheticDense:root={root}:num_classes=2:images=8:val_images=5:size=40x30"
    argv = [
        "--config-file", CONFIG, "--pretrained-weights", str(backbone_files.hub), "--output-dir", str(tmp_path / "out"),
        "--train-dataset", keys, "--val-dataset", f"{keys}:split=VAL", "train.iterations=4", "train.batch_size=2",
        "train.num_workers=0", "eval.num_workers=0", "optim.warmup_iters=2", "optim.lr=0.01",
        "train.crop_size=[28,28]", "train.short_side=28", "test.crop_size=[28,28]", "test.stride=[14,14]",
        "test.short_side=null",
    ]  # fmt: skip
    reported = run_distributed(_probe_worker, 2, argv, timeout=300)
    assert reported[0] == reported[1]
    model = dinov2_vits14_voc2012_linear(
        weights=str(tmp_path / "out" / "segmentation_linear_head.pth"), backbone_weights=str(backbone_files.hub)
    )
    metric = SegmentationMetric(3)
    from dinov2.data.datasets import SyntheticDense

    val = SyntheticDense(root=str(root), split="VAL", num_classes=2, images=8, val_images=5, size=(40, 30))
    with torch.no_grad():
        for image, label in val:  # 5 images: rank 0 evaluated 3, rank 1 evaluated 2
            tensor = make_dense_eval_transform("segmentation")(image, label)[0][None]
            metric.update(model.predict(tensor, **TEST), torch.from_numpy(label)[None])
    assert 100.0 * metric.compute()["mIoU"] == pytest.approx(reported[0], abs=1e-6)
