"""Classification metrics for the evaluation protocols, in plain torch (no torchmetrics).

Names follow the released ``dinov2.eval.metrics``: :class:`MetricType` (its values are what the
``--val-metric-type`` / ``--metric-type`` flags take), :class:`AccuracyAveraging` and
:func:`build_metric`. A metric has ``update(preds, target)``, ``compute()``, ``reset()`` and
``clone()``; ``compute()`` returns ``{"top-1": ..., "top-5": ...}`` (fractions in [0, 1]).

Metrics keep integer counts (correct / total per target class), so the result over several ranks is
exact: ``compute()`` sums the counts over the default process group (a collective: every rank must
call it) unless the metric was built with ``sync=False``.

Deliberate, documented choices where the released (torchmetrics-based) metrics are unspecified or odd:

- Ties in top-k: a sample counts as correct at k when fewer than k classes rank above its target,
  ranking by (-score, class index). This is what a stable sort gives and does not depend on the
  order ``torch.topk`` returns equal scores in.
- ``k`` larger than the number of classes is clamped (every sample is then correct at that k); the
  released torchmetrics metric raises instead.
- Mean per-class accuracy averages over the classes present in the targets. (torchmetrics also
  counts, as 0, classes that appear only among the predictions; with every class present, as on
  ImageNet val, both agree.) Per-class accuracy is NaN for classes without samples.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from enum import Enum

import torch

from dinov2 import distributed

__all__ = [
    "MetricType",
    "AccuracyAveraging",
    "TopKAccuracy",
    "ImageNetReaLAccuracy",
    "build_metric",
    "build_topk_accuracy_metric",
    "build_topk_imagenet_real_accuracy_metric",
    "target_ranks",
]


class MetricType(Enum):
    MEAN_ACCURACY = "mean_accuracy"
    MEAN_PER_CLASS_ACCURACY = "mean_per_class_accuracy"
    PER_CLASS_ACCURACY = "per_class_accuracy"
    IMAGENET_REAL_ACCURACY = "imagenet_real_accuracy"

    @property
    def accuracy_averaging(self) -> AccuracyAveraging | None:
        return getattr(AccuracyAveraging, self.name, None)

    def __str__(self) -> str:
        return self.value


class AccuracyAveraging(Enum):
    MEAN_ACCURACY = "micro"
    MEAN_PER_CLASS_ACCURACY = "macro"
    PER_CLASS_ACCURACY = "none"

    def __str__(self) -> str:
        return self.value


def target_ranks(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Rank (0 = best) of each target class among the scores, ties broken by lower class index.

    preds: [B, C] scores; target: [B] class indices. Returns [B] int64.
    """
    target_score = preds.gather(1, target[:, None])  # [B, 1]
    classes = torch.arange(preds.shape[1], device=preds.device)  # [C]
    above = preds > target_score  # [B, C]
    tied_before = (preds == target_score) & (classes[None, :] < target[:, None])  # [B, C]
    return (above | tied_before).sum(dim=1)


def _check_preds(preds: torch.Tensor, num_classes: int) -> None:
    if preds.ndim != 2 or preds.shape[1] != num_classes:
        raise ValueError(
            f"metric expects scores of shape [batch, num_classes={num_classes}], got {tuple(preds.shape)}; "
            "pass num_classes equal to the classifier's output size (or the class mapping's length)"
        )


class TopKAccuracy:
    """Top-k accuracy for several k, averaged over samples, over classes, or per class.

    ``compute()`` returns ``{f"top-{k}": value}`` where value is a 0-dim tensor (micro / macro) or a
    [num_classes] tensor (``AccuracyAveraging.PER_CLASS_ACCURACY``, NaN for classes without samples).
    """

    def __init__(
        self,
        num_classes: int,
        ks: Sequence[int] = (1, 5),
        average: AccuracyAveraging = AccuracyAveraging.MEAN_ACCURACY,
        sync: bool = True,
    ):
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if not ks or any(int(k) < 1 for k in ks):
            raise ValueError(f"top-k values must be >= 1, got {list(ks)}")
        self.num_classes = int(num_classes)
        self.ks = tuple(int(k) for k in ks)
        self.average = AccuracyAveraging(average)
        self.sync = sync
        self.reset()

    def reset(self) -> None:
        self.correct: torch.Tensor | None = None  # [len(ks), C] int64, counts per target class
        self.total: torch.Tensor | None = None  # [C] int64

    def clone(self) -> TopKAccuracy:
        return copy.deepcopy(self)

    @torch.no_grad()
    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """preds: [B, C] scores (logits, probabilities or votes); target: [B] class indices."""
        _check_preds(preds, self.num_classes)
        target = target.reshape(-1).long()
        if target.numel() and (target.min() < 0 or target.max() >= self.num_classes):
            bad = target[(target < 0) | (target >= self.num_classes)][0].item()
            raise ValueError(
                f"target label {bad} is outside [0, {self.num_classes}); labels must be class indices "
                "(a label of -1 usually means the dataset split has no labels)"
            )
        if self.correct is None:
            self.correct = torch.zeros(len(self.ks), self.num_classes, dtype=torch.long, device=preds.device)
            self.total = torch.zeros(self.num_classes, dtype=torch.long, device=preds.device)
        ranks = target_ranks(preds, target)  # [B]
        self.total += torch.bincount(target, minlength=self.num_classes)
        for i, k in enumerate(self.ks):
            self.correct[i].scatter_add_(0, target, (ranks < k).long())

    def _synced_counts(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.correct is None:
            raise RuntimeError("metric.compute() called before any update(); the evaluation set was empty")
        counts = torch.cat([self.correct, self.total[None]], dim=0).clone()  # [len(ks) + 1, C]
        if self.sync:
            distributed.all_reduce(counts)
        return counts[:-1], counts[-1]

    @torch.no_grad()
    def compute(self) -> dict[str, torch.Tensor]:
        correct, total = self._synced_counts()
        results = {}
        for i, k in enumerate(self.ks):
            if self.average is AccuracyAveraging.MEAN_ACCURACY:
                value = correct[i].sum().double() / total.sum().clamp(min=1)
            else:
                per_class = correct[i].double() / total.double()  # NaN where a class has no samples
                present = total > 0
                if self.average is AccuracyAveraging.MEAN_PER_CLASS_ACCURACY:
                    value = per_class[present].mean()
                else:
                    value = per_class
            results[f"top-{k}"] = value.float()
        return results


class ImageNetReaLAccuracy:
    """Top-k accuracy against a set of valid labels per sample (ImageNet-ReaL).

    Targets are [B, A] padded with -1; samples without any valid label are ignored. A sample is
    correct at k when one of its k best classes (ties broken by lower class index) is a valid label.
    """

    def __init__(self, num_classes: int, ks: Sequence[int] = (1, 5), sync: bool = True):
        self.num_classes = int(num_classes)
        self.ks = tuple(int(k) for k in ks)
        self.sync = sync
        self.reset()

    def reset(self) -> None:
        self.counts: torch.Tensor | None = None  # [len(ks) + 1] int64: correct per k, then samples

    def clone(self) -> ImageNetReaLAccuracy:
        return copy.deepcopy(self)

    @torch.no_grad()
    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """preds: [B, C] scores; target: [B, A] valid labels padded with -1 (or [B])."""
        _check_preds(preds, self.num_classes)
        target = target.long().reshape(preds.shape[0], -1)  # [B, A]
        valid = target >= 0
        keep = valid.any(dim=1)  # [B]
        if self.counts is None:
            self.counts = torch.zeros(len(self.ks) + 1, dtype=torch.long, device=preds.device)
        order = torch.sort(-preds, dim=1, stable=True).indices  # [B, C], ties by lower class index
        for i, k in enumerate(self.ks):
            topk = order[:, : min(k, self.num_classes)]  # [B, k]
            match = (topk[:, :, None] == target[:, None, :]) & valid[:, None, :]  # [B, k, A]
            self.counts[i] += (match.flatten(1).any(dim=1) & keep).sum()
        self.counts[-1] += keep.sum()

    @torch.no_grad()
    def compute(self) -> dict[str, torch.Tensor]:
        if self.counts is None:
            raise RuntimeError("metric.compute() called before any update(); the evaluation set was empty")
        counts = self.counts.clone()
        if self.sync:
            distributed.all_reduce(counts)
        total = counts[-1].clamp(min=1).double()
        return {f"top-{k}": (counts[i].double() / total).float() for i, k in enumerate(self.ks)}


def build_topk_accuracy_metric(
    average_type: AccuracyAveraging, num_classes: int, ks: Sequence[int] = (1, 5), sync: bool = True
) -> TopKAccuracy:
    """Top-k accuracy metric with the given averaging (released name)."""
    return TopKAccuracy(num_classes=num_classes, ks=ks, average=average_type, sync=sync)


def build_topk_imagenet_real_accuracy_metric(
    num_classes: int, ks: Sequence[int] = (1, 5), sync: bool = True
) -> ImageNetReaLAccuracy:
    """Top-k accuracy against ImageNet-ReaL label sets (released name); ``compute()`` gives ``{"top-k": ...}``."""
    return ImageNetReaLAccuracy(num_classes=num_classes, ks=ks, sync=sync)


def build_metric(
    metric_type: MetricType | str, *, num_classes: int, ks: Sequence[int] | None = None, sync: bool = True
) -> TopKAccuracy | ImageNetReaLAccuracy:
    """Metric for ``metric_type`` (a :class:`MetricType` or its string value), top-1 and top-5 by default.

    ``sync=False`` builds a metric that does not reduce over ranks (for data every rank holds in full).
    """
    try:
        metric_type = MetricType(metric_type)
    except ValueError:
        choices = [m.value for m in MetricType]
        raise ValueError(f"unknown metric type {metric_type!r}; choose one of {choices}") from None
    ks = (1, 5) if ks is None else ks
    if metric_type.accuracy_averaging is not None:
        return build_topk_accuracy_metric(metric_type.accuracy_averaging, num_classes, ks, sync=sync)
    return build_topk_imagenet_real_accuracy_metric(num_classes, ks, sync=sync)
