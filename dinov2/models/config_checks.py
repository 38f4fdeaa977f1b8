"""Config checks against the model registries: ``student.arch`` (the archs of every registered family) and
``student.ffn_layer`` (``FFN_LAYERS``), registered with :func:`dinov2.config.register_check` on import; and the
family of a ``student`` section, which chooses DINOv3's defaults (:func:`dinov2.config.register_student_family`)."""

from __future__ import annotations

from dinov2.config.checks import Checker, register_check
from dinov2.config.dinov3 import register_student_family
from dinov2.models import vision_transformer_v3 as vits3
from dinov2.models.families import arch_names, family_for_student, family_names, get_family
from dinov2.models.vision_transformer import FFN_LAYERS


def check_model_choices(c: Checker) -> None:
    """``student.arch`` (``_memeff`` suffix allowed, as released) and ``student.ffn_layer``."""
    # The registries are read at call time: tests and users may register archs after import.
    archs = arch_names()
    by_family = ", ".join(f"{sorted(get_family(name).archs)} ({name})" for name in family_names())
    c.check("student.arch", lambda v: str(v).removesuffix("_memeff") in archs, f"one of {by_family}")
    if _family_name(c) == "dinov3_vit":  # DINOv3's ViT has its own FFN and norm choices (swiglu64, layernormbf16)
        c.choice("student.ffn_layer", list(vits3.FFN_LAYERS))
        c.choice("student.norm_layer", list(vits3.NORM_LAYERS))
    else:
        c.choice("student.ffn_layer", list(FFN_LAYERS))


def _family_name(c: Checker) -> str | None:
    student = c.cfg.get("student")
    try:
        return family_for_student(student).name if student is not None else None
    except (KeyError, ValueError):  # an unknown arch: reported by the arch check
        return None


register_check(__name__, check_model_choices)
# The loader picks DINOv3's defaults for a student of a DINOv3 family: the family registry decides.
register_student_family(lambda student: family_for_student(student).name)
