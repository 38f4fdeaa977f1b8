"""TensorBoard event files with the scalars of ``training_metrics.json`` (optional: ``pip install -e ".[tracking]"``).

:class:`TensorBoardSink` is a :class:`~dinov2.logging.MetricLogger` sink: every record the logger writes to
``training_metrics.json`` (losses, lr, wd, momentum, gradient norms, images/s, and the occasional k-NN accuracy of
the online monitor) becomes scalars at ``step = iteration`` in ``<output_dir>/tensorboard``. Only the main process
writes. ``tensorboard --logdir <output_dir>/tensorboard`` shows them.
"""

from __future__ import annotations

import importlib.util
import os
from numbers import Real

__all__ = ["TensorBoardSink", "tensorboard_available"]

_NOT_SCALARS = ("iteration",)


def tensorboard_available() -> bool:
    """True when the ``tensorboard`` package (needed by ``torch.utils.tensorboard``) is installed."""
    return importlib.util.find_spec("tensorboard") is not None


class TensorBoardSink:
    """Write each metrics record as TensorBoard scalars (``tag = key``, ``step = record["iteration"]``)."""

    def __init__(self, log_dir: str | os.PathLike):
        if not tensorboard_available():
            raise ImportError(
                "tracking.tensorboard=true needs the tensorboard package: pip install -e '.[tracking]' (or set "
                "tracking.tensorboard=false)"
            )
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = str(log_dir)
        self.writer = SummaryWriter(log_dir=self.log_dir)

    def __call__(self, record: dict) -> None:
        step = int(record["iteration"])
        for key, value in record.items():
            if key not in _NOT_SCALARS and isinstance(value, Real) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, global_step=step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
