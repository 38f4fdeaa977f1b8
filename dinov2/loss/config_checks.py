"""Config check against the teacher-centring registry (``train.centering`` in ``CENTERINGS``), registered with
:func:`dinov2.config.register_check` on import."""

from __future__ import annotations

from dinov2.config.checks import Checker, register_check
from dinov2.loss.teacher_centering import CENTERINGS


def check_centering(c: Checker) -> None:
    """``train.centering``: a registered centring strategy."""
    c.choice("train.centering", list(CENTERINGS))


register_check(__name__, check_centering)
