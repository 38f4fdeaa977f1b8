"""Shared submitit launcher of the dense probes (``dinov2/run/eval/{segmentation,depth}.py``).

Takes the launcher flags of :mod:`dinov2.run.submit` and every flag of the probe's command line. The config, the
weights, the dataset strings and the recipe (with its overrides) are checked before submission (usage errors, exit
code 2). Each task joins the job's process group and runs the probe; a preempted job is requeued and resumes from
``<output-dir>/probe_checkpoint.pth``.
"""

from __future__ import annotations

import importlib
import logging

from dinov2.eval.dense.probe import check_probe_args
from dinov2.run.submit import get_args_parser, submit_jobs
from dinov2.utils.cli import usage_errors
from dinov2.utils.config import resolve_config_file

logger = logging.getLogger("dinov2")


def launch_dense_probe(module_name: str, what: str, job_name: str, argv: list[str] | None = None):
    """Parse launcher + probe flags of ``module_name`` (which has ``get_args_parser``, ``main`` and ``CONFIG_DIR``),
    check the config, weights, datasets and recipe early, submit; returns the submitit job."""
    module = importlib.import_module(module_name)
    parser = get_args_parser(
        description=f"Submitit launcher for the DINOv2 {what} probe", parents=[module.get_args_parser(add_help=False)]
    )
    args = parser.parse_intermixed_args(argv)  # recipe overrides may sit among the options
    with usage_errors(parser, FileNotFoundError, flag="--config-file"):
        args.config_file = str(resolve_config_file(args.config_file))  # absolute: the job may start elsewhere
    check_probe_args(parser, args, module.CONFIG_DIR)  # fail here, not in the job
    args.eval_module = module_name
    # The shared evaluation task (runs ``main(args)`` of ``args.eval_module``), pickled by its importable name.
    from dinov2.run.eval.launcher import Evaluator as task_class

    return submit_jobs(task_class, args, name=job_name)
