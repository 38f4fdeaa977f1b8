"""The registry of meta-architectures: the only place that turns ``MODEL.META_ARCHITECTURE`` (DINOv3's key) into
a model. The trainer, the launchers, the demo and the benchmarks call :func:`build_meta_arch`.

A meta-architecture is :class:`dinov2.train.ssl_meta_arch.SSLMetaArch` (the student, the losses, the one training
step) with a teacher strategy (:mod:`dinov2.train.teachers`):

================================  =====================================  ==========================================
``MODEL.META_ARCHITECTURE``       class                                  teacher strategy
================================  =====================================  ==========================================
``SSLMetaArch``                   ``SSLMetaArch``                        ``EMATeacher`` (EMA of the student)
``SSLMetaArch`` + distillation    ``DistillationMetaArch``               ``FrozenTeacher``
``DistillationMetaArch``          ``DistillationMetaArch``               ``FrozenTeacher``
``MultiDistillationMetaArch``     ``MultiDistillationMetaArch``          ``SharedFrozenTeacher``
================================  =====================================  ==========================================

As in DINOv3's configs, ``SSLMetaArch`` with ``distillation.enabled: true`` builds ``DistillationMetaArch``
(:func:`resolve_meta_architecture`). To add one, write a teacher strategy (or a subclass of ``SSLMetaArch``) and
register it::

    from dinov2.train.meta_archs import register_meta_arch

    register_meta_arch("MyMetaArch", SSLMetaArch, teacher=MyTeacher)   # then MODEL.META_ARCHITECTURE=MyMetaArch
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from omegaconf import DictConfig
from torch import nn

from dinov2.train.distillation import DistillationMetaArch, MultiDistillationMetaArch
from dinov2.train.ssl_meta_arch import SSLMetaArch
from dinov2.train.teachers import TeacherStrategy

__all__ = [
    "META_ARCHITECTURES",
    "MetaArchEntry",
    "build_meta_arch",
    "check_meta_arch_inputs",
    "register_meta_arch",
    "resolve_meta_architecture",
]


@dataclass(frozen=True)
class MetaArchEntry:
    """A registered meta-architecture: its constructor and, when not the constructor's default, its teacher."""

    constructor: Callable[..., nn.Module]  # called as constructor(cfg) or constructor(cfg, teacher(cfg))
    teacher: Callable[[DictConfig], TeacherStrategy] | None = None

    def teacher_class(self) -> Callable[[DictConfig], TeacherStrategy] | None:
        """The teacher strategy this entry builds (its own, or the constructor's ``default_teacher``)."""
        return self.teacher or getattr(self.constructor, "default_teacher", None)

    def build(self, cfg: DictConfig) -> nn.Module:
        if self.teacher is None:
            return self.constructor(cfg)
        return self.constructor(cfg, self.teacher(cfg))  # the strategy first: it checks before models are built


#: name -> entry (the classes below pick their teacher strategy themselves: ``default_teacher``).
META_ARCHITECTURES: dict[str, MetaArchEntry] = {
    "SSLMetaArch": MetaArchEntry(SSLMetaArch),
    "DistillationMetaArch": MetaArchEntry(DistillationMetaArch),
    "MultiDistillationMetaArch": MetaArchEntry(MultiDistillationMetaArch),
}


def register_meta_arch(
    name: str,
    constructor: Callable[..., nn.Module],
    teacher: Callable[[DictConfig], TeacherStrategy] | None = None,
) -> None:
    """Make ``MODEL.META_ARCHITECTURE=name`` build ``constructor(cfg)`` (with ``teacher``:
    ``constructor(cfg, teacher(cfg))``); re-registering a name with another entry is an error."""
    entry = MetaArchEntry(constructor, teacher)
    if name in META_ARCHITECTURES and META_ARCHITECTURES[name] != entry:
        raise ValueError(f"meta-architecture {name!r} is already registered ({META_ARCHITECTURES[name]!r})")
    META_ARCHITECTURES[name] = entry


def resolve_meta_architecture(cfg: DictConfig) -> str:
    """The registry name to build: ``MODEL.META_ARCHITECTURE``, where ``SSLMetaArch`` with ``distillation.enabled``
    means ``DistillationMetaArch`` (DINOv3 keeps ``SSLMetaArch`` and branches on the flag)."""
    name = cfg.MODEL.META_ARCHITECTURE
    if name == "SSLMetaArch" and cfg.distillation.enabled:
        return "DistillationMetaArch"
    return name


def _entry(cfg: DictConfig) -> MetaArchEntry:
    name = resolve_meta_architecture(cfg)
    if name not in META_ARCHITECTURES:
        raise ValueError(
            f"MODEL.META_ARCHITECTURE={name!r} is not a known meta-architecture; valid: {sorted(META_ARCHITECTURES)} "
            "(register a new one with dinov2.train.meta_archs.register_meta_arch)"
        )
    return META_ARCHITECTURES[name]


def build_meta_arch(cfg: DictConfig) -> nn.Module:
    """The meta-architecture named by ``cfg.MODEL.META_ARCHITECTURE`` (see :func:`resolve_meta_architecture`)."""
    return _entry(cfg).build(cfg)


def check_meta_arch_inputs(cfg: DictConfig) -> None:
    """The meta-architecture's checks of the config and its input files (e.g. a distillation teacher's config and
    file), run before anything is written; raises as :func:`build_meta_arch` would, without building a model."""
    entry = _entry(cfg)
    checker = getattr(entry.teacher_class(), "check_inputs", None)
    if checker is not None:
        checker(cfg)
