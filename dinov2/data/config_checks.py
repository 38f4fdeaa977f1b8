"""Config check against the data devices of the augmentation (``train.data_device`` in ``DATA_DEVICES``),
registered with :func:`dinov2.config.register_check` on import."""

from __future__ import annotations

from dinov2.config.checks import Checker, register_check
from dinov2.data.gpu_augment import DATA_DEVICES


def check_data_device(c: Checker) -> None:
    """``train.data_device``: where the multi-crop augmentation runs."""
    c.choice("train.data_device", list(DATA_DEVICES))


register_check(__name__, check_data_device)
