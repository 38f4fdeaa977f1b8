"""Submit DINOv2 k-NN evaluation with submitit (one task per GPU); see :mod:`dinov2.run.eval.launcher`.

    python dinov2/run/eval/knn.py --nodes 1 --ngpus 8 --config-file dinov2/configs/eval/vitl14_pretrain.yaml \\
        --pretrained-weights W --output-dir D --train-dataset ... --val-dataset ...

Takes the launcher flags of :mod:`dinov2.run.submit` and every flag of ``python -m dinov2.eval.knn``.
"""

from __future__ import annotations

import logging
import sys

from dinov2.run.eval.launcher import launch


def main(argv: list[str] | None = None):
    """Submit the job; returns the submitit job."""
    return launch("knn", argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    main()
    sys.exit(0)
