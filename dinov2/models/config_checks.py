"""Config checks against the model registries: ``student.arch`` (the archs of every registered family) and
``student.ffn_layer`` (``FFN_LAYERS``), registered with :func:`dinov2.config.register_check` on import."""

from __future__ import annotations

from dinov2.config.checks import Checker, register_check
from dinov2.models.families import arch_names
from dinov2.models.vision_transformer import FFN_LAYERS


def check_model_choices(c: Checker) -> None:
    """``student.arch`` (``_memeff`` suffix allowed, as released) and ``student.ffn_layer``."""
    # The registries are read at call time: tests and users may register archs after import.
    archs = arch_names()
    c.check("student.arch", lambda v: str(v).removesuffix("_memeff") in archs, f"one of {sorted(archs)}")
    c.choice("student.ffn_layer", list(FFN_LAYERS))


register_check(__name__, check_model_choices)
