"""Submit DINOv2 training with submitit: one task per GPU, requeued by itself on preemption or time-out.

    python dinov2/run/train/train.py --nodes 4 --ngpus 8 --partition P --timeout 2800 \\
        --config-file dinov2/configs/train/vitl16_short.yaml --output-dir /shared/exp key=value ...
    dinov2-train-slurm ...   (the same, the installed console script)

The config file (a path or a packaged name, made absolute), the overrides, the dataset string and the entry point
are checked before submission: a problem is a usage error (exit code 2), not a failed job.

Each task joins the job's process group from the SLURM variables (``dinov2.distributed.enable``)
and calls the training entry point with the parsed arguments. On SIGUSR2 (preemption, or the time
limit minus 120 s) submitit calls :meth:`Trainer.checkpoint`, which resubmits a fresh task with
the same arguments; the trainer then resumes from the latest checkpoint in ``--output-dir``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable

from dinov2 import distributed
from dinov2.run.submit import SubmititTask, get_args_parser, submit_jobs
from dinov2.utils.cli import usage_errors
from dinov2.utils.config import resolve_config_file

logger = logging.getLogger("dinov2")

DEFAULT_ENTRY_POINT = "dinov2.train.train:main"


def get_train_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """The training script's own parser (``dinov2/train/train.py``): the flags the launcher forwards."""
    from dinov2.train.train import get_args_parser as training_parser

    return training_parser(add_help=add_help)


def resolve_entry_point(spec: str) -> Callable:
    """``"package.module:function"`` -> the function."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"entry point must look like 'package.module:function', got {spec!r}")
    return getattr(importlib.import_module(module_name), attribute)


def add_entry_point_flag(parser: argparse.ArgumentParser, default: str) -> None:
    """``--entry-point module:function``: the training function each task calls (tests pass a stand-in)."""
    parser.add_argument(
        "--entry-point", default=default, help="training function called in each task (module:function)"
    )


def check_launch_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors before submission: ``--config-file`` (made absolute when given: the job may start elsewhere)
    and ``--entry-point`` (importable)."""
    if args.config_file:
        with usage_errors(parser, FileNotFoundError, flag="--config-file"):
            args.config_file = str(resolve_config_file(args.config_file))
    with usage_errors(parser, ValueError, ImportError, AttributeError, flag="--entry-point"):
        resolve_entry_point(args.entry_point)  # fail here, not in the job, on a wrong entry point


class Trainer(SubmititTask):
    """The submitit task: set up distributed, then run the training entry point on ``args``."""

    def run(self):
        distributed.enable(overwrite=True)
        entry_point = resolve_entry_point(getattr(self.args, "entry_point", DEFAULT_ENTRY_POINT))
        return entry_point(self.args)


def main(argv: list[str] | None = None):
    """Parse the launcher and training flags and submit; returns the submitit job."""
    parser = get_args_parser(
        description="Submitit launcher for DINOv2 training", parents=[get_train_args_parser(add_help=False)]
    )
    add_entry_point_flag(parser, DEFAULT_ENTRY_POINT)
    args = parser.parse_args(argv)
    if not args.config_file:
        parser.error("the following arguments are required: --config-file")
    check_launch_args(parser, args)
    if args.entry_point == DEFAULT_ENTRY_POINT:  # another entry point may read the config its own way
        from dinov2.train.train import check_args

        check_args(parser, args)  # config, overrides, dataset string
    return submit_training(args, name="dinov2:train")


def submit_training(args: argparse.Namespace, name: str):
    """Submit :class:`Trainer` running ``args.entry_point`` in each task; returns the submitit job."""
    # Pickle the task class by its importable name, also when a launcher file runs as a script (__main__).
    from dinov2.run.train.train import Trainer as task_class

    return submit_jobs(task_class, args, name=name)


def run_launcher(main: Callable[[list[str] | None], object], argv: list[str] | None = None) -> int:
    """A launcher's console script: log INFO lines, submit with ``main(argv)`` (default ``sys.argv``), return 0."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    main(argv)
    return 0


def cli_main(argv: list[str] | None = None) -> int:
    """``dinov2-train-slurm`` / ``python dinov2/run/train/train.py``: submit the job of ``argv`` (default
    ``sys.argv``); its id and log folder are logged."""
    return run_launcher(main, argv)


if __name__ == "__main__":
    sys.exit(cli_main())
