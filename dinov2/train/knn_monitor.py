"""The online k-NN monitor: k-NN accuracy of the teacher on a small labelled set, every N training iterations.

Configured by ``tracking.knn`` (off by default): ``train_dataset`` / ``val_dataset`` are dataset strings (e.g. a few
thousand labelled images: ``ImageFolder:root=/data/small/train``), evaluated every ``period_iterations`` on the
teacher backbone as it trains, with the k-NN protocol of ``dinov2.eval.knn`` (:mod:`dinov2.features.knn_scoring`:
L2-normalised class tokens, softmax voting at ``temperature``, top-1 for each ``nb_knn``; images resized and
centre-cropped as the k-NN evaluation does). The accuracies become a record of their own in
``training_metrics.json`` (``{"iteration", "knn_top1_k<k>"}``, percent) and TensorBoard, so
``python -m dinov2.plot`` draws them next to the losses; the log shows them too. It is collective: every process
takes part (feature extraction is split over them), and a sharded teacher runs as it does in training.
"""

from __future__ import annotations

import logging

import torch
from omegaconf import DictConfig
from torch import nn

from dinov2.data import make_dataset
from dinov2.data.datasets.extended import UnreadableImagesError
from dinov2.data.transforms import make_classification_eval_transform
from dinov2.features.knn import check_k
from dinov2.features.knn_scoring import RESIZE_RATIO, knn_eval_of_model, top1_by_k

logger = logging.getLogger("dinov2")

__all__ = ["KnnMonitor"]


class KnnMonitor:
    """``monitor.due(iteration)`` / ``monitor.evaluate(backbone, autocast_dtype)`` -> ``{"knn_top1_k<k>": %}``."""

    def __init__(self, section: DictConfig):
        self.period = int(section.period_iterations)
        self.train_dataset, self.val_dataset = str(section.train_dataset), str(section.val_dataset)
        if self.period > 0 and not (self.train_dataset and self.val_dataset):
            raise ValueError(
                f"tracking.knn.period_iterations={self.period} needs tracking.knn.train_dataset and "
                "tracking.knn.val_dataset (labelled dataset strings, e.g. ImageFolder:root=/data/small/train); "
                "set period_iterations=0 to turn the monitor off"
            )
        self.nb_knn = [int(k) for k in section.nb_knn]
        self.temperature = float(section.temperature)
        self.crop_size = int(section.crop_size)
        self.resize_size = None if section.resize_size is None else int(section.resize_size)
        self.batch_size, self.num_workers = int(section.batch_size), int(section.num_workers)
        self.latest: dict[str, float] = {}  # the last accuracies, read by the collapse guard
        if self.enabled and self.nb_knn:  # a k the train set cannot give stops the run now, not at the first k-NN
            check_k(self.nb_knn, len(make_dataset(dataset_str=self.train_dataset)), flag="tracking.knn.nb_knn")

    @property
    def enabled(self) -> bool:
        return self.period > 0

    def due(self, iteration: int) -> bool:
        """True after iteration ``iteration`` (0-based) when it ends a period."""
        return self.enabled and (iteration + 1) % self.period == 0

    def evaluate(self, backbone: nn.Module, autocast_dtype=None) -> dict[str, float]:
        """k-NN top-1 (percent) of ``backbone`` per k (collective). Unreadable images in the monitor's sets turn the
        monitor off with an error naming them and return ``{}``: a measurement never stops the training."""
        resize = int(self.resize_size) if self.resize_size else round(self.crop_size * RESIZE_RATIO)
        transform = make_classification_eval_transform(resize_size=resize, crop_size=self.crop_size)
        try:
            results = knn_eval_of_model(
                backbone,
                make_dataset(dataset_str=self.train_dataset, transform=transform),
                make_dataset(dataset_str=self.val_dataset, transform=transform),
                nb_knn=self.nb_knn,
                temperature=self.temperature,
                autocast_dtype=autocast_dtype or torch.float,
                batch_size=self.batch_size,
                num_workers=self.num_workers,
                progress=False,
            )
        except UnreadableImagesError as error:  # raised alike on every rank: all turn the monitor off together
            logger.error("k-NN monitor turned off for the rest of this run (training goes on): %s", error)
            self.period = 0
            return {}
        accuracies = {f"knn_top1_k{k}": top1 for k, top1 in top1_by_k(results).items()}
        logger.info("k-NN monitor: %s", ", ".join(f"{k} {v:.2f}" for k, v in sorted(accuracies.items())))
        self.latest = accuracies
        return accuracies
