"""What watches a training run besides the log: TensorBoard scalars and the online k-NN monitor (``tracking.*``).

:class:`Tracking` is built once by the trainer from the config; it gives the ``MetricLogger`` its sinks and, after
each iteration, runs the k-NN monitor when it is due on the backbone the evaluation scripts will read from the
teacher export (the EMA teacher in SSL training). See ``dinov2/logging/tensorboard.py`` and
``dinov2/train/knn_monitor.py``.
"""

from __future__ import annotations

import os

from omegaconf import DictConfig
from torch import nn

from dinov2 import distributed
from dinov2.logging import MetricLogger
from dinov2.logging.tensorboard import TensorBoardSink
from dinov2.train.knn_monitor import KnnMonitor

__all__ = ["Tracking"]


class Tracking:
    """TensorBoard sink (main process, when ``tracking.tensorboard``) and k-NN monitor of one run."""

    def __init__(self, cfg: DictConfig):
        self.sinks = []
        if cfg.tracking.tensorboard and distributed.is_main_process():
            self.sinks.append(TensorBoardSink(os.path.join(cfg.train.output_dir, "tensorboard")))
        self.knn = KnnMonitor(cfg.tracking.knn)

    def after_iteration(self, model: nn.Module, iteration: int, metric_logger: MetricLogger) -> None:
        """Run the k-NN monitor if it is due after ``iteration``; its accuracies become a metrics record."""
        if self.knn.due(iteration):
            backbone = model.eval_exports()["teacher_checkpoint.pth"]["backbone"]
            accuracies = self.knn.evaluate(backbone, model.precision.autocast_dtype)
            if accuracies:
                metric_logger.record(iteration, **accuracies)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
