"""Submit a curation step (or the whole pipeline) with submitit: one task per GPU, requeued on preemption.

    python dinov2/run/curation/curate.py --nodes 2 --ngpus 8 --partition P --timeout 4320 \\
        kmeans --embeddings /data/emb --n-clusters 100000 5000 --n-resampling-steps 1 10 --sample-size 1 5 \\
        --output-dir /data/curation/kmeans
    python dinov2/run/curation/curate.py --nodes 4 --ngpus 8 run --config-file curation.yaml --output-dir D

The launcher flags (:mod:`dinov2.run.submit`: ``--nodes --ngpus --timeout --partition --account --qos --cluster
...``) come first, then the step and its flags exactly as for ``python -m dinov2.curation``. Each task joins the
job's process group (SLURM variables) and runs the step on its rank's slice. On preemption or time-out the
task is requeued with the same arguments and the step resumes from its files (finished shards, levels and
steps are kept; k-means continues from its last checkpoint). Logs: ``<step output>/submitit/<job id>/``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from dinov2.run.submit import SubmititTask, get_args_parser, submit_jobs

logger = logging.getLogger("dinov2")


class CurationTask(SubmititTask):
    """The submitit task: ``python -m dinov2.curation <step argv>`` in each task."""

    def run(self):
        from dinov2.curation.cli import main as curation_main

        return curation_main(self.args.step_argv)


def _step_output(step_args: argparse.Namespace) -> Path:
    if getattr(step_args, "output_dir", None):
        return Path(step_args.output_dir)
    if step_args.step == "run":
        from dinov2.curation.config import load_curation_config

        return Path(load_curation_config(step_args.config_file, step_args.opts).output_dir)
    return Path(step_args.output).parent


def main(argv: list[str] | None = None):
    """Parse the launcher flags and the step, check the step's flags, submit; returns the submitit job."""
    from dinov2.curation.cli import check_args as check_step_args
    from dinov2.curation.cli import get_args_parser as step_parser

    parser = get_args_parser(description="Submitit launcher for DINOv2 data curation")
    parser.add_argument("step_argv", nargs=argparse.REMAINDER, help="<step> [flags] (python -m dinov2.curation)")
    args = parser.parse_args(argv)
    if not args.step_argv:
        parser.error("give a curation step and its flags, e.g. ... kmeans --embeddings X.npy --n-clusters 1000 ...")
    parser_of_step = step_parser()
    step_args = parser_of_step.parse_args(args.step_argv)  # fails here, not in the job, on a bad step flag
    check_step_args(parser_of_step, step_args)  # and on a bad config, file or dataset string
    args.output_dir = str(_step_output(step_args).absolute() / "submitit" / "%j")
    # Pickle the task class by its importable name, also when this file runs as a script (__main__).
    from dinov2.run.curation.curate import CurationTask as task_class

    return submit_jobs(task_class, args, name=f"dinov2:curation:{step_args.step}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    main(sys.argv[1:])
