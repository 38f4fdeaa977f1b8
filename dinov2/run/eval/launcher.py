"""Shared submitit launcher of the evaluation protocols (``dinov2/run/eval/{knn,linear,log_regression,segmentation,
depth,retrieval,transfer,video,finetune}.py``), e.g.

    python dinov2/run/eval/knn.py --nodes 1 --ngpus 8 --partition P \\
        --config-file dinov2/configs/eval/vitl14_pretrain.yaml --pretrained-weights W --output-dir D \\
        --train-dataset ImageNet:split=TRAIN:root=R:extra=E --val-dataset ImageNet:split=VAL:root=R:extra=E

The launcher flags (``--nodes --ngpus --timeout --partition --cluster ...``, see :mod:`dinov2.run.submit`)
come with every flag of the protocol's own command line, trailing ``key=value`` config overrides included. The
config, the weights and the dataset strings are checked before submission (usage errors, exit code 2). Each task
joins the job's process group (in ``setup_and_build_model``) and calls the protocol's ``main(args)``; on preemption
or time-out the task is requeued with the same arguments (the linear probe then resumes from its checkpoint in
``--output-dir``; the dense probes from ``<output-dir>/probe_checkpoint.pth``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
from collections.abc import Callable
from types import ModuleType

from dinov2.eval.common import check_eval_args
from dinov2.run.submit import SubmititTask, get_args_parser, submit_jobs
from dinov2.utils.cli import usage_errors
from dinov2.utils.config import resolve_config_file

logger = logging.getLogger("dinov2")

# protocol -> (module with get_args_parser / main and DATASET_FLAGS or check_args, --help description, job name)
PROTOCOLS = {
    "knn": ("dinov2.eval.knn.cli", "Submitit launcher for DINOv2 k-NN evaluation", "dinov2:knn"),
    "linear": ("dinov2.eval.linear.cli", "Submitit launcher for DINOv2 linear evaluation", "dinov2:linear"),
    "log_regression": (
        "dinov2.eval.log_regression.cli",
        "Submitit launcher for DINOv2 logistic regression evaluation",
        "dinov2:logreg",
    ),
    "segmentation": (
        "dinov2.eval.segmentation.probe",
        "Submitit launcher for the DINOv2 segmentation probe",
        "dinov2:segmentation",
    ),
    "depth": ("dinov2.eval.depth.probe", "Submitit launcher for the DINOv2 depth probe", "dinov2:depth"),
    "zeroshot": (
        "dinov2.eval.zeroshot.cli",
        "Submitit launcher for dino.txt zero-shot classification",
        "dinov2:zeroshot",
    ),
    "retrieval": ("dinov2.eval.retrieval.cli", "Submitit launcher for DINOv2 instance retrieval", "dinov2:retrieval"),
    "transfer": ("dinov2.eval.transfer.cli", "Submitit launcher for DINOv2 linear transfer", "dinov2:transfer"),
    "video": ("dinov2.eval.video.cli", "Submitit launcher for DINOv2 video classification", "dinov2:video"),
    "finetune": ("dinov2.eval.finetune.cli", "Submitit launcher for DINOv2 supervised fine-tuning", "dinov2:finetune"),
}


class Evaluator(SubmititTask):
    """The submitit task: ``main(args)`` of the protocol module ``args.eval_module`` in each task (or of the class's
    ``eval_module``: the release's per-protocol ``Evaluator(args)`` of ``dinov2.run.eval.<protocol>`` are
    :func:`protocol_launcher` subclasses)."""

    eval_module: str | None = None

    def run(self):
        logger.info("Args: %s", self.args)
        return importlib.import_module(self.eval_module or self.args.eval_module).main(self.args)


def protocol_launcher(protocol: str, module: str) -> tuple[Callable, type[Evaluator]]:
    """What the launcher module ``module`` of ``protocol`` (``dinov2/run/eval/<protocol>.py``) publishes:
    ``main(argv)``, which submits the job and returns the submitit job, and ``Evaluator``, the release's submitit task
    class (``Evaluator(args)()`` runs the protocol's ``main(args)``), named so in ``module`` for submitit's pickling."""

    def main(argv: list[str] | None = None):
        """Submit the job; returns the submitit job."""
        return launch(protocol, argv)

    main.__module__ = module
    task = type("Evaluator", (Evaluator,), {"eval_module": PROTOCOLS[protocol][0], "__module__": module})
    task.__doc__ = f"The release's submitit task: ``Evaluator(args)()`` runs ``{PROTOCOLS[protocol][0]}.main(args)``."
    return main, task


def submit_eval_module(
    module_name: str,
    description: str,
    job_name: str,
    check: Callable[[argparse.ArgumentParser, argparse.Namespace, ModuleType], None],
    argv: list[str] | None = None,
):
    """Parse the launcher flags and those of ``module_name`` (which has ``get_args_parser`` and ``main``), make
    ``--config-file`` absolute, run ``check(parser, args, module)`` (usage errors before submission), submit an
    :class:`Evaluator` running ``module.main(args)``; returns the submitit job."""
    module = importlib.import_module(module_name)
    parser = get_args_parser(description=description, parents=[module.get_args_parser(add_help=False)])
    args = parser.parse_intermixed_args(argv)  # config overrides may sit among the options
    if getattr(args, "config_file", None):  # zero-shot has no such flag; hub-backbone protocols may leave it out
        with usage_errors(parser, FileNotFoundError, flag="--config-file"):
            args.config_file = str(resolve_config_file(args.config_file))  # absolute: the job may start elsewhere
    check(parser, args, module)  # fail here, not in the job
    args.eval_module = module_name
    # Pickle the task class by its importable name, also when a launcher file runs as a script (__main__).
    from dinov2.run.eval.launcher import Evaluator as task_class

    return submit_jobs(task_class, args, name=job_name)


def _check_protocol_args(parser: argparse.ArgumentParser, args: argparse.Namespace, module: ModuleType) -> None:
    """The protocol's own early checks (``check_args``: the dense probes add their recipe), else the config, weights
    and ``DATASET_FLAGS`` dataset strings."""
    if hasattr(module, "check_args"):
        module.check_args(parser, args)
    else:
        check_eval_args(parser, args, module.DATASET_FLAGS)


def launch(protocol: str, argv: list[str] | None = None):
    """Parse the launcher and protocol flags, check the config file, submit; returns the submitit job."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; one of {sorted(PROTOCOLS)}")
    module_name, description, job_name = PROTOCOLS[protocol]
    return submit_eval_module(module_name, description, job_name, _check_protocol_args, argv)
