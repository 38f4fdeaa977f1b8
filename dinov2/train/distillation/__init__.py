"""Distillation of a frozen, larger teacher into one student or several at once (see docs/distillation.md).

- :class:`DistillationMetaArch` (``distillation.enabled: true``; ``MODEL.META_ARCHITECTURE`` stays ``SSLMetaArch``
  as in DINOv3's configs, or names it): one student, its EMA, the frozen teacher;
- :class:`MultiDistillationMetaArch` (``MODEL.META_ARCHITECTURE: MultiDistillationMetaArch`` with
  ``multidistillation.enabled: true``): one of several students, each in its process subgroup, sharing the
  teacher's outputs (set-up in :mod:`dinov2.train.distillation.multi_setup`).
"""

from dinov2.train.distillation.config import resolve_meta_architecture
from dinov2.train.distillation.meta_arch import DistillationMetaArch
from dinov2.train.distillation.multi_meta_arch import MultiDistillationMetaArch

__all__ = ["DistillationMetaArch", "MultiDistillationMetaArch", "resolve_meta_architecture"]
