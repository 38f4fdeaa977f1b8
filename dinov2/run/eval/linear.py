"""Submit DINOv2 linear evaluation with submitit (one task per GPU): the flags of :mod:`dinov2.run.submit` and of
``python -m dinov2.eval.linear``; usage and behaviour in :mod:`dinov2.run.eval.launcher`."""

from __future__ import annotations

from dinov2.run.eval.launcher import protocol_launcher
from dinov2.run.submit import run_script

main, Evaluator = protocol_launcher("linear", __name__)  # Evaluator: the release's submitit task class

if __name__ == "__main__":
    run_script(main)
