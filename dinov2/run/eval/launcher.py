"""Shared submitit launcher of the evaluation protocols (``dinov2/run/eval/{knn,linear,log_regression}.py``).

    python dinov2/run/eval/knn.py --nodes 1 --ngpus 8 --partition P \\
        --config-file dinov2/configs/eval/vitl14_pretrain.yaml --pretrained-weights W --output-dir D \\
        --train-dataset ImageNet:split=TRAIN:root=R:extra=E --val-dataset ImageNet:split=VAL:root=R:extra=E

The launcher flags (``--nodes --ngpus --timeout --partition --cluster ...``, see :mod:`dinov2.run.submit`)
come with every flag of the protocol's own command line. Each task joins the job's process group (in
``setup_and_build_model``) and calls the protocol's ``main(args)``; on preemption or time-out the task
is requeued with the same arguments (the linear probe then resumes from its checkpoint in ``--output-dir``).
"""

from __future__ import annotations

import importlib
import logging
import os

from dinov2.run.submit import SubmititTask, get_args_parser, submit_jobs
from dinov2.utils.config import resolve_config_file

logger = logging.getLogger("dinov2")

# protocol -> (module with get_args_parser / main, description, job name)
PROTOCOLS = {
    "knn": ("dinov2.eval.knn", "k-NN", "dinov2:knn"),
    "linear": ("dinov2.eval.linear", "linear", "dinov2:linear"),
    "log_regression": ("dinov2.eval.log_regression", "logistic regression", "dinov2:logreg"),
}


class Evaluator(SubmititTask):
    """The submitit task: ``main(args)`` of the protocol module ``args.eval_module`` in each task."""

    def run(self):
        logger.info("Args: %s", self.args)
        return importlib.import_module(self.args.eval_module).main(self.args)


def launch(protocol: str, argv: list[str] | None = None):
    """Parse the launcher and protocol flags, check the config file, submit; returns the submitit job."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; one of {sorted(PROTOCOLS)}")
    module_name, what, job_name = PROTOCOLS[protocol]
    protocol_parser = importlib.import_module(module_name).get_args_parser(add_help=False)
    parser = get_args_parser(description=f"Submitit launcher for DINOv2 {what} evaluation", parents=[protocol_parser])
    args = parser.parse_args(argv)
    try:
        args.config_file = str(resolve_config_file(args.config_file or ""))
    except FileNotFoundError as error:
        parser.error(f"--config-file: {error}")
    if args.pretrained_weights and "://" not in args.pretrained_weights and not os.path.exists(args.pretrained_weights):
        parser.error(f"--pretrained-weights {args.pretrained_weights!r} does not exist")
    args.eval_module = module_name
    # Pickle the task class by its importable name, also when a launcher file runs as a script (__main__).
    from dinov2.run.eval.launcher import Evaluator as task_class

    return submit_jobs(task_class, args, name=job_name)
