"""Submit the DINOv2 depth probe with submitit (one task per GPU); see :mod:`dinov2.eval.depth`.

    python dinov2/run/eval/depth.py --nodes 1 --ngpus 8 --partition P \\
        --config-file dinov2/configs/eval/vitl14_pretrain.yaml --pretrained-weights W --output-dir D \\
        --train-dataset NYU:root=R:split=TRAIN --val-dataset NYU:root=R:split=TEST [--recipe dpt] [key=value ...]

Takes the launcher flags of :mod:`dinov2.run.submit` and every flag of ``python -m dinov2.eval.depth``; a
preempted job is requeued and resumes from ``<output-dir>/probe_checkpoint.pth``.
"""

from __future__ import annotations

from dinov2.run.eval.launcher import protocol_launcher
from dinov2.run.submit import run_script

main, Evaluator = protocol_launcher("depth", __name__)  # Evaluator: the release's submitit task class

if __name__ == "__main__":
    run_script(main)
