"""Submit dino.txt training with submitit: one task per GPU, requeued by itself on preemption or time-out.

    python dinov2/run/train/dinotxt.py --nodes 4 --ngpus 8 --partition P --timeout 2800 \\
        --config-file train/dinotxt_demo_cpu --output-dir /shared/dinotxt train.fsdp=true key=value ...
    dinov2-dinotxt-slurm ...   (the same, the installed console script)

Takes the launcher flags of :mod:`dinov2.run.submit` and every flag of ``python -m dinov2.train.dinotxt``. The config
file (a path or a packaged name, made absolute), the overrides and the dataset strings are checked before
submission (:func:`dinov2.train.dinotxt.check_args`): a problem is a usage error (exit code 2), not a failed job.
Without ``--output-dir`` the run goes to ``<shared folder>/<job id>``.

The task is the training launcher's (:class:`dinov2.run.train.train.Trainer`): each task joins the job's process
group and calls the entry point (``dinov2.train.dinotxt:main``); on SIGUSR2 (preemption, or the time limit minus
120 s) submitit requeues a fresh task with the same arguments (``--no-resume`` dropped:
:meth:`dinov2.run.submit.SubmititTask.checkpoint`), which resumes from the latest checkpoint in
``<output-dir>/checkpoints``.
"""

from __future__ import annotations

import argparse
import sys

from dinov2.run.submit import get_args_parser as launcher_args_parser
from dinov2.run.submit import get_shared_folder
from dinov2.run.train.train import add_entry_point_flag, check_launch_args, run_launcher, submit_training

ENTRY_POINT = "dinov2.train.dinotxt:main"


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """The launcher flags and those of ``python -m dinov2.train.dinotxt`` (``--entry-point`` among them)."""
    from dinov2.train.dinotxt import get_args_parser as training_parser

    parser = launcher_args_parser(
        description="Submitit launcher for dino.txt training",
        parents=[training_parser(add_help=False)],
        add_help=add_help,
    )
    add_entry_point_flag(parser, ENTRY_POINT)
    return parser


def main(argv: list[str] | None = None):
    """Parse, check (usage errors before submission), submit; returns the submitit job."""
    from dinov2.train.dinotxt import check_args

    parser = get_args_parser()
    args = parser.parse_intermixed_args(argv)  # config overrides may sit among the options
    check_launch_args(parser, args)  # --config-file made absolute, --entry-point importable
    if not args.output_dir:  # the folder submit_jobs would choose, so that the config check sees one
        try:
            args.output_dir = str(get_shared_folder() / "%j")
        except RuntimeError as error:
            parser.error(str(error))
    check_args(parser, args)
    return submit_training(args, "dinov2:dinotxt")


def cli_main(argv: list[str] | None = None) -> int:
    """``dinov2-dinotxt-slurm`` / ``python dinov2/run/train/dinotxt.py``: submit the job of ``argv`` (default
    ``sys.argv``); its id and log folder are logged."""
    return run_launcher(main, argv)


if __name__ == "__main__":
    sys.exit(cli_main())
