"""Metrics: top-k with deterministic ties, averaging modes, ReaL accuracy, cross-rank reduction."""

import math

import pytest
import torch

from dinov2.eval.metrics import (
    AccuracyAveraging,
    ImageNetReaLAccuracy,
    MetricType,
    TopKAccuracy,
    build_metric,
    target_ranks,
)
from tests.dist_helpers import run_distributed


def _reference_hits(preds, target, k):
    """Brute force: sort classes by (-score, class index) in Python; is the target among the first k?"""
    hits = []
    for row, t in zip(preds.tolist(), target.tolist()):
        order = sorted(range(len(row)), key=lambda c: (-row[c], c))
        hits.append(t in order[:k])
    return torch.tensor(hits)


def _data(seed=0, n=60, num_classes=7):
    g = torch.Generator().manual_seed(seed)
    preds = torch.randint(0, 4, (n, num_classes), generator=g).float()  # many ties on purpose
    target = torch.randint(0, num_classes, (n,), generator=g)
    return preds, target


def test_released_names_and_values():
    assert [m.value for m in MetricType] == [
        "mean_accuracy",
        "mean_per_class_accuracy",
        "per_class_accuracy",
        "imagenet_real_accuracy",
    ]
    assert str(MetricType.MEAN_ACCURACY) == "mean_accuracy"
    assert MetricType.MEAN_PER_CLASS_ACCURACY.accuracy_averaging is AccuracyAveraging.MEAN_PER_CLASS_ACCURACY
    assert MetricType.IMAGENET_REAL_ACCURACY.accuracy_averaging is None
    assert [a.value for a in AccuracyAveraging] == ["micro", "macro", "none"]
    assert isinstance(build_metric("per_class_accuracy", num_classes=3), TopKAccuracy)
    assert isinstance(build_metric(MetricType.IMAGENET_REAL_ACCURACY, num_classes=3), ImageNetReaLAccuracy)
    with pytest.raises(ValueError, match="unknown metric type 'top1'"):
        build_metric("top1", num_classes=3)


def test_target_ranks_break_ties_by_class_index():
    preds = torch.tensor([[1.0, 1.0, 1.0], [0.0, 2.0, 2.0], [3.0, 1.0, 3.0]])
    target = torch.tensor([2, 2, 2])
    assert target_ranks(preds, target).tolist() == [2, 1, 1]


@pytest.mark.parametrize("ks", [(1, 5), (1, 2, 3)])
def test_topk_matches_brute_force_with_ties(ks):
    preds, target = _data()
    micro = build_metric(MetricType.MEAN_ACCURACY, num_classes=7, ks=ks)
    macro = build_metric(MetricType.MEAN_PER_CLASS_ACCURACY, num_classes=7, ks=ks)
    per_class = build_metric(MetricType.PER_CLASS_ACCURACY, num_classes=7, ks=ks)
    for start in range(0, 60, 16):  # several updates accumulate
        for metric in (micro, macro, per_class):
            metric.update(preds[start : start + 16], target[start : start + 16])
    for k in ks:
        hits = _reference_hits(preds, target, k).double()
        expected_per_class = torch.stack([hits[target == c].mean() for c in range(7)])
        assert micro.compute()[f"top-{k}"].item() == pytest.approx(hits.mean().item(), abs=1e-7)
        torch.testing.assert_close(per_class.compute()[f"top-{k}"], expected_per_class.float())
        assert macro.compute()[f"top-{k}"].item() == pytest.approx(expected_per_class.mean().item(), abs=1e-6)


def test_per_class_nan_for_absent_class_and_macro_ignores_it():
    preds = torch.eye(4)[[0, 1, 1, 3]]  # predicts 0, 1, 1, 3
    target = torch.tensor([0, 1, 3, 3])  # class 2 absent
    per_class = build_metric("per_class_accuracy", num_classes=4, ks=(1,))
    macro = build_metric("mean_per_class_accuracy", num_classes=4, ks=(1,))
    per_class.update(preds, target)
    macro.update(preds, target)
    values = per_class.compute()["top-1"]
    assert values[:2].tolist() == [1.0, 1.0] and math.isnan(values[2]) and values[3].item() == 0.5
    assert macro.compute()["top-1"].item() == pytest.approx(2.5 / 3)


def test_k_larger_than_num_classes_is_clamped():
    metric = build_metric("mean_accuracy", num_classes=3)
    metric.update(torch.randn(5, 3), torch.tensor([0, 1, 2, 0, 1]))
    assert metric.compute()["top-5"].item() == 1.0


def test_clear_errors():
    metric = build_metric("mean_accuracy", num_classes=3)
    with pytest.raises(ValueError, match=r"target label -1 is outside \[0, 3\).*no labels"):
        metric.update(torch.randn(2, 3), torch.tensor([0, -1]))
    with pytest.raises(ValueError, match=r"num_classes=3.*\(2, 4\)"):
        metric.update(torch.randn(2, 4), torch.tensor([0, 1]))
    with pytest.raises(RuntimeError, match="before any update"):
        build_metric("mean_accuracy", num_classes=3).compute()


def test_clone_is_independent_and_reset_clears():
    metric = build_metric("mean_accuracy", num_classes=2, ks=(1,))
    copy = metric.clone()
    metric.update(torch.tensor([[1.0, 0.0]]), torch.tensor([0]))
    copy.update(torch.tensor([[1.0, 0.0]]), torch.tensor([1]))
    assert metric.compute()["top-1"].item() == 1.0 and copy.compute()["top-1"].item() == 0.0
    metric.reset()
    with pytest.raises(RuntimeError):
        metric.compute()


def test_imagenet_real_accuracy():
    preds = torch.tensor([[0.1, 0.9, 0.0], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    target = torch.tensor([[1, 2], [1, -1], [0, -1], [-1, -1]])  # last sample has no label: ignored
    metric = build_metric("imagenet_real_accuracy", num_classes=3, ks=(1, 2))
    metric.update(preds, target)
    result = metric.compute()
    # top-1 picks: 1 (ok), 0 (tie -> lower index; not in {1}), 2 (not in {0}); top-2 adds 2, 1, 1
    assert result["top-1"].item() == pytest.approx(1 / 3)
    assert result["top-2"].item() == pytest.approx(2 / 3)


METRIC_TYPES = ["mean_accuracy", "mean_per_class_accuracy", "per_class_accuracy"]


def _distributed_metrics(rank, world_size):
    preds, target = _data(seed=3, n=50)
    sizes = [20, 30]  # uneven shards
    start = sum(sizes[:rank])
    results = {}
    for metric_type in METRIC_TYPES:
        metric = build_metric(metric_type, num_classes=7, ks=(1, 3))
        metric.update(preds[start : start + sizes[rank]], target[start : start + sizes[rank]])
        # plain lists: tensors sent through the result queue may outlive the child's shared memory
        results[metric_type] = {k: v.tolist() for k, v in metric.compute().items()}
    return results


def test_two_process_reduction_equals_single_process():
    results = run_distributed(_distributed_metrics, 2)
    preds, target = _data(seed=3, n=50)
    for metric_type in METRIC_TYPES:
        single = build_metric(metric_type, num_classes=7, ks=(1, 3))
        single.update(preds, target)
        for key, expected in single.compute().items():
            for result in results:
                torch.testing.assert_close(torch.tensor(result[metric_type][key]), expected, equal_nan=True)
