"""Submit DINOv2 linear evaluation with submitit (one task per GPU): the flags of :mod:`dinov2.run.submit` and of
``python -m dinov2.eval.linear``; usage and behaviour in :mod:`dinov2.run.eval.launcher`."""

from __future__ import annotations

from dinov2.run.eval.launcher import launch, protocol_evaluator
from dinov2.run.submit import run_script


def main(argv: list[str] | None = None):
    """Submit the job; returns the submitit job."""
    return launch("linear", argv)


Evaluator = protocol_evaluator("linear", __name__)  # the release's submitit task class of this launcher


if __name__ == "__main__":
    run_script(main)
