"""Supervised fine-tuning of a backbone with a linear head (``python -m dinov2.eval.finetune``).

:mod:`~dinov2.eval.finetune.model` (backbone + the linear probe's head, what trains, layer-wise lr decay groups),
:mod:`~dinov2.eval.finetune.train` (the loop: precision, FSDP, schedules, checkpoints),
:mod:`~dinov2.eval.finetune.measures` (k-NN, linear probe and fine-tuned accuracy),
:mod:`~dinov2.eval.finetune.run` (one run: data, before / after numbers, export, results),
:mod:`~dinov2.eval.finetune.cli` (the command line).
"""

from dinov2.eval.finetune.cli import cli_main, get_args_parser, main
from dinov2.eval.finetune.model import FineTuneClassifier, block_units, optimizer_groups, set_trainable
from dinov2.eval.finetune.run import export_finetuned, run_finetune
from dinov2.eval.finetune.train import Recipe, Trainer

__all__ = [
    "FineTuneClassifier",
    "Recipe",
    "Trainer",
    "block_units",
    "cli_main",
    "export_finetuned",
    "get_args_parser",
    "main",
    "optimizer_groups",
    "run_finetune",
    "set_trainable",
]
