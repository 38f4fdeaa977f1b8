"""Transfer metrics against scikit-learn: top-1 and mean per-class accuracy of the logistic-regression protocol,
VOC 2007 11-point AP (interpolated from scikit-learn's precision-recall curve), and the one-vs-rest VOC fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, average_precision_score, balanced_accuracy_score, precision_recall_curve

from dinov2.eval.metrics import MetricType, build_metric
from dinov2.eval.transfer import eval_multilabel_log_regression, voc07_average_precision, voc07_mean_average_precision

METRICS = [(MetricType.MEAN_ACCURACY, accuracy_score), (MetricType.MEAN_PER_CLASS_ACCURACY, balanced_accuracy_score)]


@pytest.mark.parametrize("metric_type, sklearn_metric", METRICS)
def test_classification_metrics_equal_sklearn(metric_type, sklearn_metric):
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(200, 7, generator=g)
    labels = torch.cat([torch.arange(7), torch.randint(0, 7, (193,), generator=g)])  # every class present
    metric = build_metric(metric_type, num_classes=7, sync=False)
    metric.update(probs, labels)
    got = float(metric.compute()["top-1"])
    assert got == pytest.approx(sklearn_metric(labels.numpy(), probs.argmax(1).numpy()), abs=1e-6)


def _sklearn_11_point(scores, targets):
    precision, recall, _ = precision_recall_curve(targets > 0, scores)
    precision, recall = precision[:-1], recall[:-1]  # sklearn appends (recall 0, precision 1), no image's point
    return np.mean([precision[recall >= t].max() if (recall >= t).any() else 0.0 for t in np.linspace(0, 1, 11)])


def test_voc07_ap_equals_the_sklearn_interpolation_and_ignores_difficult():
    rng = np.random.default_rng(0)
    for _ in range(20):
        scores = rng.random(60)
        targets = rng.choice([-1, 1], size=60, p=[0.7, 0.3])
        assert voc07_average_precision(scores, targets) == pytest.approx(_sklearn_11_point(scores, targets), abs=1e-12)
        difficult = rng.random(60) < 0.2
        with_difficult = np.where(difficult, 0, targets)
        kept = ~difficult
        expected = _sklearn_11_point(scores[kept], targets[kept])
        assert voc07_average_precision(scores, with_difficult) == pytest.approx(expected, abs=1e-12)
    assert voc07_average_precision(scores, targets) != pytest.approx(average_precision_score(targets > 0, scores))
    assert np.isnan(voc07_average_precision(scores, -np.ones(60)))
    scores2, targets2 = rng.random((30, 3)), rng.choice([-1, 1], size=(30, 3))
    mean_ap, aps = voc07_mean_average_precision(scores2, targets2)
    assert mean_ap == pytest.approx(np.mean([_sklearn_11_point(scores2[:, k], targets2[:, k]) for k in range(3)]))


def test_one_vs_rest_learns_separable_multilabel_targets():
    g = torch.Generator().manual_seed(0)

    def split(n):
        x = torch.randn(n, 6, generator=g, dtype=torch.float64)
        return x, np.where(x[:, :4].numpy() > 0, 1, -1)  # class k present when feature k > 0

    result = eval_multilabel_log_regression(split(80), split(40), split(60), c_values=[1e-4, 1.0, 100.0])
    assert result["mAP"] > 95 and len(result["AP"]) == 4 and result["best_C"] in (1.0, 100.0)
    assert [entry["C"] for entry in result["sweep"]] == [1e-4, 1.0, 100.0]
