"""The meta-architectures the trainer can build, by the name in ``MODEL.META_ARCHITECTURE`` (DINOv3's key).

A meta-architecture owns the student, the teacher and the losses, and implements the step parts the trainer
calls (``forward_backward``, ``after_optimizer_step``, ``get_params_groups``, ``parallel_roles``; see
:class:`dinov2.train.ssl_meta_arch.SSLMetaArch`). To add one, subclass ``SSLMetaArch`` (overriding the hooks you
need: ``build_backbones``, ``build_teacher``, ``teacher_targets``, ``after_optimizer_step`` ...) and register it::

    from dinov2.train.meta_archs import register_meta_arch

    register_meta_arch("MyMetaArch", MyMetaArch)   # then MODEL.META_ARCHITECTURE=MyMetaArch

Distillation (``dinov2/train/distillation/``) registers ``DistillationMetaArch`` and ``MultiDistillationMetaArch``.
As in DINOv3's configs, ``MODEL.META_ARCHITECTURE: SSLMetaArch`` with ``distillation.enabled: true`` builds
``DistillationMetaArch``.
"""

from __future__ import annotations

from collections.abc import Callable

from omegaconf import DictConfig
from torch import nn

from dinov2.train.distillation import DistillationMetaArch, MultiDistillationMetaArch, resolve_meta_architecture
from dinov2.train.ssl_meta_arch import SSLMetaArch

__all__ = ["META_ARCHITECTURES", "build_meta_arch", "register_meta_arch"]

#: name -> constructor taking the full config.
META_ARCHITECTURES: dict[str, Callable[[DictConfig], nn.Module]] = {
    "SSLMetaArch": SSLMetaArch,
    "DistillationMetaArch": DistillationMetaArch,
    "MultiDistillationMetaArch": MultiDistillationMetaArch,
}


def register_meta_arch(name: str, constructor: Callable[[DictConfig], nn.Module]) -> None:
    """Make ``MODEL.META_ARCHITECTURE=name`` build ``constructor(cfg)``; re-registering a name is an error."""
    if name in META_ARCHITECTURES and META_ARCHITECTURES[name] is not constructor:
        raise ValueError(f"meta-architecture {name!r} is already registered ({META_ARCHITECTURES[name]!r})")
    META_ARCHITECTURES[name] = constructor


def build_meta_arch(cfg: DictConfig) -> nn.Module:
    """The meta-architecture named by ``cfg.MODEL.META_ARCHITECTURE`` (``SSLMetaArch`` with
    ``distillation.enabled``: ``DistillationMetaArch``), built from ``cfg``."""
    name = resolve_meta_architecture(cfg)
    if name not in META_ARCHITECTURES:
        raise ValueError(
            f"MODEL.META_ARCHITECTURE={name!r} is not a known meta-architecture; valid: {sorted(META_ARCHITECTURES)} "
            "(register a new one with dinov2.train.meta_archs.register_meta_arch)"
        )
    return META_ARCHITECTURES[name](cfg)
