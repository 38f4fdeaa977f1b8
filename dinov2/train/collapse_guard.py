"""The collapse guard (``adapt.collapse_guard.*``): cheap signals of a collapsing teacher, logged every N iterations,
with an action when one crosses its threshold.

Signals (one no-grad teacher forward on the batch's global crops; averaged over processes):

- ``target_entropy``: mean entropy of the teacher's DINO targets divided by ln K (K prototypes). 1 means uniform
  targets, the collapse of a too-hot teacher (a DINO loss pinned at ln K, dinov3#199);
- ``target_perplexity``: exp(entropy of the batch-mean target): how many prototypes the batch uses; 1 means every
  image goes to one prototype (the other collapse);
- ``cls_std``: standard deviation over the batch of the L2-normalised teacher class tokens, averaged over the
  dimensions and times sqrt(D) (about 1 for spread-out features, 0 when every image maps to one point);
- ``cls_effective_rank``: exp(entropy of the normalised singular values) of the centred normalised class tokens;
- ``knn_drop``: percentage points the online k-NN monitor (``tracking.knn``) lost since its first measurement
  (only when the monitor is on; read after it runs).

A threshold left ``null`` is not checked, and none is checked during the head warm-up
(``adapt.head_warmup_iterations``): the backbone cannot collapse while it is frozen, and fresh heads give
near-uniform targets at first (signals are still logged). ``action: warn`` logs the crossing; ``action: stop`` raises
:class:`CollapseDetected` naming the signal, its value and threshold, before the trainer writes any checkpoint or
export of that iteration, so the newest checkpoint is the last good one.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from dinov2 import distributed
from dinov2.loss.centering import softmax_center
from dinov2.train.batch import Batch

logger = logging.getLogger("dinov2")

__all__ = ["ACTIONS", "THRESHOLDS", "CollapseDetected", "CollapseGuard", "entropy", "teacher_signals"]

ACTIONS = ("warn", "stop")
#: config key -> (signal, True when the signal must stay at or below the threshold)
THRESHOLDS = {
    "max_target_entropy": ("target_entropy", True),
    "min_target_perplexity": ("target_perplexity", False),
    "min_cls_std": ("cls_std", False),
    "min_cls_effective_rank": ("cls_effective_rank", False),
    "max_knn_drop": ("knn_drop", True),
}


class CollapseDetected(RuntimeError):
    """Raised by the guard with ``action: stop``; ``signal``, ``value``, ``threshold``, ``iteration`` say why."""

    def __init__(self, message: str, *, signal: str, value: float, threshold: float, iteration: int):
        super().__init__(message)
        self.signal, self.value, self.threshold, self.iteration = signal, value, threshold, iteration


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of the distributions along the last axis of ``p``."""
    return -(p * p.clamp_min(1e-30).log()).sum(-1)


@torch.no_grad()
def teacher_signals(model: nn.Module, batch: Batch, teacher_temp: float) -> dict[str, float]:
    """The guard's signals of ``model.teacher`` on ``batch`` (collective: averaged over processes). Reads the
    softmax centre without updating it, so the training is unchanged."""
    teacher = model.teacher
    with model.autocast():
        cls = teacher.backbone(batch.global_crops, is_training=True)["x_norm_clstoken"]  # [2B, D]
        logits = teacher.dino_head(cls).float()  # [2B, K]
    if model.cfg.train.centering == "sinkhorn_knopp":
        probs = model.dino_loss.sinkhorn_knopp_teacher(logits, teacher_temp=teacher_temp)
    else:
        probs = softmax_center(logits, model.dino_loss.center, teacher_temp)
    k = probs.shape[-1]
    z = F.normalize(cls.float(), dim=-1)  # [2B, D]
    singular = torch.linalg.svdvals(z - z.mean(0))
    shares = singular / singular.sum().clamp_min(1e-12)
    signals = torch.stack([entropy(probs).mean() / math.log(k), z.std(0).mean() * math.sqrt(z.shape[-1])])
    signals = torch.cat([signals, entropy(shares).exp()[None]])
    # the batch-mean target goes along: its perplexity is taken after the average over processes
    per_process = torch.cat([signals, probs.mean(0)])
    distributed.all_reduce(per_process)
    averaged = per_process / distributed.get_global_size()
    mean_entropy, std, rank = averaged[:3].tolist()
    perplexity = float(entropy(averaged[3:]).exp())
    return {"target_entropy": mean_entropy, "target_perplexity": perplexity, "cls_std": std, "cls_effective_rank": rank}


class CollapseGuard:
    """``guard.due(it)``, ``guard.measure(model, batch, temp, it, knn)`` -> signals, ``guard.check(it, signals)``."""

    def __init__(self, section: DictConfig, head_warmup_iterations: int = 0):
        self.period = int(section.period_iterations)
        self.head_warmup_iterations = int(head_warmup_iterations)
        self.action = str(section.action)
        if self.action not in ACTIONS:
            raise ValueError(f"adapt.collapse_guard.action={self.action!r}: choose one of {list(ACTIONS)}")
        self.thresholds = {key: float(section[key]) for key in THRESHOLDS if section[key] is not None}
        self.first_knn: float | None = None

    @property
    def enabled(self) -> bool:
        return self.period > 0

    def due(self, iteration: int) -> bool:
        """True after iteration ``iteration`` (0-based) when it ends a period."""
        return self.enabled and (iteration + 1) % self.period == 0

    def measure(self, model: nn.Module, batch: Batch, teacher_temp: float, knn: dict[str, float]) -> dict[str, float]:
        """The teacher's signals, plus ``knn_drop`` when the k-NN monitor has measured (``knn``: its latest
        ``{"knn_top1_k<k>": %}``; the smallest k is followed)."""
        signals = teacher_signals(model, batch, teacher_temp)
        if knn:
            top1 = knn[min(knn, key=lambda name: int(name.rsplit("k", 1)[1]))]
            self.first_knn = top1 if self.first_knn is None else self.first_knn
            signals["knn_drop"] = self.first_knn - top1
        return signals

    def check(self, iteration: int, signals: dict[str, float]) -> list[str]:
        """The crossings of ``signals`` (messages); logged (``warn``) or raised as :class:`CollapseDetected`."""
        crossings = []
        if iteration < self.head_warmup_iterations:
            return crossings
        for key, threshold in self.thresholds.items():
            signal, at_most = THRESHOLDS[key]
            value = signals.get(signal)
            if value is None or (value <= threshold if at_most else value >= threshold):
                continue
            relation = ">" if at_most else "<"
            message = (
                f"collapse guard at iteration {iteration}: {signal}={value:.4g} {relation} "
                f"adapt.collapse_guard.{key}={threshold:g}"
            )
            if self.action == "stop":
                raise CollapseDetected(
                    f"{message}; training stopped before writing this iteration's checkpoint, so the newest "
                    "checkpoint in the output directory is the last one before the crossing. Lower optim.base_lr, "
                    "lengthen adapt.head_warmup_iterations, raise teacher.momentum_teacher or check "
                    "teacher.teacher_temp (README: Adapt a released model to your data)",
                    signal=signal,
                    value=value,
                    threshold=threshold,
                    iteration=iteration,
                )
            logger.warning("%s (adapt.collapse_guard.action=warn: training goes on)", message)
            crossings.append(message)
        return crossings
