"""Submit the DINOv2 segmentation probe with submitit (one task per GPU); see :mod:`dinov2.eval.segmentation`.

    python dinov2/run/eval/segmentation.py --nodes 1 --ngpus 8 --partition P \\
        --config-file dinov2/configs/eval/vitl14_pretrain.yaml --pretrained-weights W --output-dir D \\
        --train-dataset ADE20K:root=R:split=TRAIN --val-dataset ADE20K:root=R:split=VAL [--recipe ms] [key=value ...]

Takes the launcher flags of :mod:`dinov2.run.submit` and every flag of ``python -m dinov2.eval.segmentation``.
A preempted job is requeued and resumes from ``<output-dir>/probe_checkpoint.pth`` (:mod:`dinov2.run.eval.launcher`).
"""

from __future__ import annotations

from dinov2.run.eval.launcher import protocol_launcher
from dinov2.run.submit import run_script

main, Evaluator = protocol_launcher("segmentation", __name__)  # Evaluator: the release's submitit task class

if __name__ == "__main__":
    run_script(main)
