"""Distillation of a frozen, larger teacher into one student or several at once (see docs/distillation.md).

Both are :class:`dinov2.train.ssl_meta_arch.SSLMetaArch` with another teacher strategy
(:mod:`dinov2.train.teachers`):

- :class:`DistillationMetaArch` with :class:`FrozenTeacher` (``distillation.enabled: true``;
  ``MODEL.META_ARCHITECTURE`` stays ``SSLMetaArch`` as in DINOv3's configs, or names it): one student, its EMA,
  the frozen teacher;
- :class:`MultiDistillationMetaArch` with :class:`SharedFrozenTeacher` (``MODEL.META_ARCHITECTURE:
  MultiDistillationMetaArch`` with ``multidistillation.enabled: true``): one of several students, each in its
  process subgroup, sharing the teacher's outputs (set-up in :mod:`dinov2.train.distillation.multi_setup`).

Which of them a config builds is decided by the registry, :mod:`dinov2.train.meta_archs`.
"""

from dinov2.train.distillation.meta_arch import DistillationMetaArch, FrozenTeacher
from dinov2.train.distillation.multi_meta_arch import MultiDistillationMetaArch, SharedFrozenTeacher

__all__ = ["DistillationMetaArch", "FrozenTeacher", "MultiDistillationMetaArch", "SharedFrozenTeacher"]
