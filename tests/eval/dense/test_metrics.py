"""Segmentation and depth metrics against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from dinov2.eval.depth.metrics import DepthMetric, depth_metrics, eval_mask
from dinov2.eval.segmentation.metrics import SegmentationMetric, intersect_and_union


def test_segmentation_metrics_by_hand():
    label = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 0, 2]])
    # 7 valid pixels (one ignored):
    # class 0: label at (0,0),(0,1); pred 0 at (0,0),(1,1),(1,2 ignored) -> inter 1, pred 2, label 2, union 3
    # class 1: label at (0,2),(0,3),(1,3); pred 1 at (0,1),(0,2),(0,3) -> inter 2, pred 3, label 3, union 4
    # class 2: label at (1,0),(1,1); pred 2 at (1,0),(1,3) -> inter 1, pred 2, label 2, union 3
    areas = intersect_and_union(pred, label, 3)
    assert areas.tolist() == [[1, 2, 1], [3, 4, 3], [2, 3, 2], [2, 3, 2]]
    metric = SegmentationMetric(3, class_names=["a", "b", "c"])
    metric.update(pred[None], label[None])
    result = metric.compute()
    assert result["IoU"] == pytest.approx({"a": 1 / 3, "b": 2 / 4, "c": 1 / 3})
    assert result["mIoU"] == pytest.approx((1 / 3 + 1 / 2 + 1 / 3) / 3)
    assert result["Acc"] == pytest.approx({"a": 1 / 2, "b": 2 / 3, "c": 1 / 2})
    assert result["aAcc"] == pytest.approx(4 / 7)


def test_segmentation_metrics_accumulate_over_the_set_and_skip_absent_classes():
    metric = SegmentationMetric(4)
    metric.update(torch.tensor([[0, 0]]), torch.tensor([[0, 1]]))
    metric.update(torch.tensor([[1, 1]]), torch.tensor([[1, 1]]))
    result = metric.compute()  # class 0: inter 1 union 2; class 1: inter 2 union 3; classes 2, 3 absent
    assert math.isnan(result["IoU"]["2"]) and math.isnan(result["IoU"]["3"])
    assert result["mIoU"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert result["aAcc"] == pytest.approx(3 / 4)
    with pytest.raises(ValueError, match="predicted classes"):
        metric.update(torch.tensor([[7]]), torch.tensor([[0]]))


def test_depth_metrics_by_hand():
    gt = torch.tensor([1.0, 2.0, 4.0])
    pred = torch.tensor([1.0, 4.0, 3.0])
    m = depth_metrics(pred, gt)
    # max(gt / pred, pred / gt) = 1, 2, 4/3: below 1.25 once, below 1.5625 twice, below 1.953 twice
    assert m["a1"] == pytest.approx(1 / 3) and m["a2"] == pytest.approx(2 / 3) and m["a3"] == pytest.approx(2 / 3)
    assert m["abs_rel"] == pytest.approx((0 + 1 + 0.25) / 3)
    assert m["sq_rel"] == pytest.approx((0 + 4 / 2 + 1 / 4) / 3)
    assert m["rmse"] == pytest.approx(math.sqrt((0 + 4 + 1) / 3))
    logs = [0.0, math.log(2.0), math.log(3 / 4)]
    assert m["rmse_log"] == pytest.approx(math.sqrt(sum(x * x for x in logs) / 3))
    assert m["log_10"] == pytest.approx(sum(abs(x) for x in logs) / math.log(10) / 3)
    mean = sum(logs) / 3
    assert m["silog"] == pytest.approx(100 * math.sqrt(sum(x * x for x in logs) / 3 - mean**2))


def test_depth_metric_masks_and_averages_over_images():
    gt = torch.zeros(2, 480, 640)
    gt[0, 100:110, 100:110] = 2.0  # inside the Eigen crop
    gt[0, 0:10, 0:10] = 2.0  # outside the crop: ignored
    gt[1, 200, 200] = 20.0  # beyond max_depth: image 2 has no valid pixel and is left out
    pred = torch.full((2, 1, 480, 640), 1.0)
    pred[0, 0, 0:10, 0:10] = 100.0
    metric = DepthMetric(1e-3, 10.0, crop="eigen")
    metric.update(pred, gt)
    result = metric.compute()
    assert result["rmse"] == pytest.approx(1.0) and result["abs_rel"] == pytest.approx(0.5) and result["a1"] == 0
    assert eval_mask(gt[0], 1e-3, 10.0, "eigen").sum() == 100
    assert eval_mask(gt[0], 1e-3, 10.0).sum() == 200
    with pytest.raises(ValueError, match="crop"):
        eval_mask(gt[0], 0, 1, "nyu")
