"""Config check against the FSDP sharding strategies (``compute_precision.*.sharding_strategy``), registered with
:func:`dinov2.config.register_check` on import."""

from __future__ import annotations

from dinov2.config.checks import Checker, register_check
from dinov2.config.ssl_checks import MODEL_PARTS
from dinov2.distributed.sharding import SHARDING_STRATEGIES


def check_sharding(c: Checker) -> None:
    """``compute_precision.{teacher,student}.<part>.sharding_strategy``: a strategy of ``sharding.py``."""
    for model in ("teacher", "student"):
        for part in MODEL_PARTS:
            c.choice(f"compute_precision.{model}.{part}.sharding_strategy", SHARDING_STRATEGIES)


register_check(__name__, check_sharding)
