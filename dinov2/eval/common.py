"""Pieces shared by the protocol scripts: extra flags, eval datasets, metric types and result files.

Flags added to the released ones (defaults give the released behaviour):

- ``--crop-size`` / ``--resize-size``: the eval transform (resize the short side, centre-crop). Released:
  224 / 256 for k-NN and linear (``resize = crop * 256 / 224`` when only the crop is given) and 224 / 224
  for logistic regression. The linear train transform uses ``RandomResizedCrop(crop_size)``.
- ``--num-workers`` for k-NN and logistic regression (released: fixed 5 and 0).
- ``--no-progress``: no progress bar (log lines only).

Before any work, :func:`check_eval_args` turns what would fail later into usage errors (exit code 2): the config
file and its overrides, a local ``--pretrained-weights`` that is not there, dataset strings missing or malformed.

Result files in ``--output-dir``: ``results_eval_<protocol>.json`` keeps the released layout (appended, one
``{key: value}`` object per line for k-NN and logistic regression; ``iter: N`` blocks for linear), and
``results_eval_<protocol>_detailed.json`` holds the whole result of the last run as one strict JSON
document (every setting, per-try and per-class values, the arguments, timings).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dinov2 import distributed
from dinov2.data import make_dataset
from dinov2.data.datasets.extended import set_unreadable_policy
from dinov2.data.transforms import make_classification_eval_transform
from dinov2.eval.metrics import AccuracyAveraging, MetricType
from dinov2.eval.results import append_json_lines, to_jsonable, write_json
from dinov2.eval.setup import get_args_parser as get_setup_args_parser
from dinov2.eval.utils import check_labelled
from dinov2.features.backbone_args import BACKBONE_NOTE, add_backbone_args, check_eval_args, loaded_from_args
from dinov2.logging import setup_logging
from dinov2.utils.cli import ArgumentParser, add_output_dir, call_with_args, check_writable_dir

logger = logging.getLogger("dinov2")

__all__ = [
    "TRAIN_VAL_DATASETS",
    "check_eval_args",
    "get_protocol_args_parser",
    "run_eval_cli",
    "run_protocol_cli",
    "run_with_model",
    "add_eval_transform_args",
    "default_resize_size",
    "make_eval_transform",
    "make_eval_dataset",
    "as_metric_type",
    "check_extracted_labels",
    "write_results",
    "finish_eval_run",
    "args_record",
    "backbone_eval_parser",
    "run_backbone_eval",
    "BackboneProtocol",
]


# (flag, args attribute, required) of the train and val dataset strings every protocol takes
TRAIN_VAL_DATASETS = (("--train-dataset", "train_dataset_str", True), ("--val-dataset", "val_dataset_str", True))


def get_protocol_args_parser(
    description: str | None = None, parents: list[argparse.ArgumentParser] | None = None, add_help: bool = True
) -> ArgumentParser:
    """The parser every classification protocol starts from: the set-up flags of :mod:`dinov2.eval.setup`
    (``--config-file`` and ``--pretrained-weights`` required) and the released ``--train-dataset`` /
    ``--val-dataset`` (defaults: ImageNet TRAIN / VAL)."""
    setup_parser = get_setup_args_parser(parents=parents or [], add_help=False, required=True)
    parser = ArgumentParser(description=description, parents=[setup_parser], add_help=add_help)
    parser.add_argument("--train-dataset", dest="train_dataset_str", type=str, help="Training dataset")
    parser.add_argument("--val-dataset", dest="val_dataset_str", type=str, help="Validation dataset")
    parser.set_defaults(train_dataset_str="ImageNet:split=TRAIN", val_dataset_str="ImageNet:split=VAL")
    return parser


def run_with_model(function: Callable[..., Any], args: argparse.Namespace, *, build: Callable, **values: Any) -> int:
    """A protocol's released ``main(args)``: build the backbone from ``--config-file`` / ``--pretrained-weights``
    (``build(args) -> (model, autocast dtype)``, i.e. :func:`dinov2.eval.setup.setup_and_build_model`), then run
    ``function`` with the flags of the same names (:func:`dinov2.utils.cli.call_with_args`), ``values``,
    ``run_args=args`` and, where the protocol has ``--no-progress`` (:func:`add_eval_transform_args`), ``progress``;
    returns 0."""
    if hasattr(args, "no_progress"):
        values.setdefault("progress", not args.no_progress)
    model, autocast_dtype = build(args)
    call_with_args(function, args, model=model, autocast_dtype=autocast_dtype, run_args=args, **values)
    return 0


def run_protocol_cli(
    get_args_parser: Callable[..., argparse.ArgumentParser],
    check_args: Callable[[argparse.ArgumentParser, argparse.Namespace], None],
    main: Callable[[argparse.Namespace], int],
    description: str,
    argv: Sequence[str] | None = None,
    *,
    intermixed: bool = False,
) -> int:
    """A protocol's console script: parse ``argv`` (default ``sys.argv``; ``intermixed``: options may stand after
    the trailing ``key=value`` overrides) with the protocol's parser, ``check_args(parser, args)`` (usage errors,
    exit code 2), then run ``main(args)``."""
    parser = get_args_parser(description=description)
    args = parser.parse_intermixed_args(argv) if intermixed else parser.parse_args(argv)
    check_args(parser, args)
    return main(args)


def run_eval_cli(
    get_args_parser: Callable[..., argparse.ArgumentParser],
    main: Callable[[argparse.Namespace], int],
    description: str,
    datasets: Sequence[tuple[str, str, bool]],
    argv: Sequence[str] | None = None,
) -> int:
    """The console script of a protocol on the released set-up flags: :func:`run_protocol_cli` checking the config,
    weights and ``datasets`` (:func:`check_eval_args`)."""

    def check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        check_eval_args(parser, args, datasets)

    return run_protocol_cli(get_args_parser, check, main, description, argv, intermixed=True)


def add_eval_transform_args(
    parser: argparse.ArgumentParser, *, num_workers: int | None, resize_ratio: float, progress: bool = True
) -> None:
    """Add ``--crop-size``, ``--resize-size``, ``--no-progress`` (when ``progress``) and (unless ``num_workers`` is
    None, i.e. the protocol already has it) ``--num-workers`` with that default."""
    parser.add_argument("--crop-size", type=int, default=224, help="eval centre crop (px); also the train crop")
    parser.add_argument(
        "--resize-size",
        type=int,
        default=None,
        help=f"eval resize of the short side (px); default {round(224 * resize_ratio)} for a 224 crop (released), "
        "scaled with --crop-size",
    )
    if num_workers is not None:
        parser.add_argument("--num-workers", type=int, default=num_workers, help="data-loading processes")
    if progress:
        parser.add_argument("--no-progress", action="store_true", help="no progress bar during feature extraction")


def default_resize_size(crop_size: int, resize_size: int | None, resize_ratio: float) -> int:
    """``resize_size``, or ``crop_size * resize_ratio`` rounded (256 for a 224 crop at ratio 256 / 224)."""
    return int(resize_size) if resize_size else round(crop_size * resize_ratio)


def make_eval_transform(crop_size: int, resize_size: int | None, resize_ratio: float) -> Callable:
    """The released eval transform (bicubic resize, centre crop, ImageNet normalisation) at these sizes."""
    if crop_size < 1:
        raise ValueError(f"--crop-size must be >= 1, got {crop_size}")
    resize = default_resize_size(crop_size, resize_size, resize_ratio)
    return make_classification_eval_transform(resize_size=resize, crop_size=crop_size)


def make_eval_dataset(dataset: Any, transform: Callable | None, role: str):
    """A labelled dataset from a dataset string (``ImageFolder:root=...``) or a dataset object (used as is).

    ``role`` (train / val / ...) names the dataset in errors; unlabelled datasets raise here. Sets that are not
    ``train`` sets refuse unreadable images (``on_unreadable="raise"``, the error names the file): an evaluation on
    other images than asked would change the results silently (k-NN and log-regression feature extraction refuse
    them in every set, naming them all).
    """
    if isinstance(dataset, str):
        name = dataset
        dataset = make_dataset(dataset_str=dataset, transform=transform)
    else:
        name = f"{role} dataset {type(dataset).__name__}"
    check_labelled(dataset, name)
    if role != "train":
        set_unreadable_policy(dataset, "raise")
    return dataset


def check_extracted_labels(labels, name: str) -> None:
    """Raise if extraction produced labels < 0 (targets that were None or -1) for dataset ``name``."""
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError(
            f"dataset {name!r} has no labels ({int((labels < 0).sum())} images with label -1 / None): this "
            "protocol needs a labelled split (class sub-folders for ImageFolder)"
        )


def as_metric_type(value: MetricType | AccuracyAveraging | str) -> MetricType:
    """A :class:`MetricType` from itself, its value string or the released :class:`AccuracyAveraging`."""
    if isinstance(value, AccuracyAveraging):
        return MetricType[value.name]
    try:
        return MetricType(value)
    except ValueError:
        raise ValueError(f"unknown metric type {value!r}; choose one of {[m.value for m in MetricType]}") from None


def args_record(args: argparse.Namespace | Mapping | None) -> dict:
    """The arguments of a run as JSON-safe values (for the detailed result file)."""
    if args is None:
        return {}
    items = vars(args).items() if isinstance(args, argparse.Namespace) else args.items()
    out = {}
    for key, value in items:
        try:
            out[key] = to_jsonable(value)
        except TypeError:
            out[key] = repr(value)
    return out


def write_results(output_dir: str | os.PathLike | None, protocol: str, released: Mapping | None, detailed: Mapping):
    """Write (main process only) the released-layout lines and the detailed document; returns their paths."""
    if not output_dir or not distributed.is_main_process():
        return None
    output_dir = Path(output_dir)
    paths = {}
    if released is not None:
        paths["released"] = output_dir / f"results_eval_{protocol}.json"
        append_json_lines(paths["released"], released)
    paths["detailed"] = output_dir / f"results_eval_{protocol}_detailed.json"
    write_json(paths["detailed"], detailed)
    logger.info("Results written to %s", ", ".join(str(p) for p in paths.values()))
    return paths


def finish_eval_run(
    output_dir: str | os.PathLike | None,
    protocol: str,
    released: Mapping | None,
    detailed: Mapping,
    *,
    start: float,
    run_args: argparse.Namespace | Mapping | None,
) -> None:
    """Collective end of a protocol run: :func:`write_results` with ``detailed`` completed by ``seconds`` (since
    ``start``, a ``time.perf_counter()`` value) and ``args`` (:func:`args_record` of ``run_args``), then a barrier."""
    detailed = {**detailed, "seconds": time.perf_counter() - start, "args": args_record(run_args)}
    write_results(output_dir, protocol, released, detailed)
    distributed.barrier()


def backbone_eval_parser(
    description: str | None, parents: list[argparse.ArgumentParser] | None, add_help: bool
) -> argparse.ArgumentParser:
    """The parser of a protocol built on the backbone flags (``--model | --config-file``, ``--weights``,
    ``--random-init``, ``--seed``) with ``--output-dir``; the protocol adds its own flags."""
    parser = ArgumentParser(description=description, parents=parents or [], add_help=add_help, epilog=BACKBONE_NOTE)
    add_backbone_args(parser)
    add_output_dir(parser, help="where the results and logs go")
    return parser


def run_backbone_eval(args: argparse.Namespace, evaluate: Callable[..., Any]) -> int:
    """``main(args)`` of the protocols built on the backbone flags (:func:`~dinov2.features.backbone_args.
    add_backbone_args`: retrieval, transfer, video): join the process group (if any), log to ``--output-dir``, load
    the backbone on the eval device, call ``evaluate(backbone=..., progress=..., run_args=args, <flags>)``."""
    distributed.enable(overwrite=True)
    setup_logging(output=args.output_dir or None, level=logging.INFO)
    backbone = loaded_from_args(args, device=None)
    call_with_args(evaluate, args, backbone=backbone, progress=not args.no_progress, run_args=args)
    return 0


@dataclass(frozen=True)
class BackboneProtocol:
    """The command line of a protocol built on the backbone flags (retrieval, transfer, video), from its parts:
    ``add_flags(parser)`` adds the protocol's flags, ``check_flags(parser, args)`` turns what would fail later into
    usage errors, ``evaluate`` is its ``eval_<protocol>_with_model``. The protocol's module publishes the methods
    below as its ``get_args_parser``, ``check_args``, ``main`` and ``cli_main`` (read by the SLURM launcher)."""

    description: str
    add_flags: Callable[[argparse.ArgumentParser], None]
    check_flags: Callable[[argparse.ArgumentParser, argparse.Namespace], None]
    evaluate: Callable[..., Any]

    def get_args_parser(
        self,
        description: str | None = None,
        parents: list[argparse.ArgumentParser] | None = None,
        add_help: bool = True,
    ) -> argparse.ArgumentParser:
        """Backbone flags, ``--output-dir`` (:func:`backbone_eval_parser`) and the protocol's flags."""
        parser = backbone_eval_parser(description, parents, add_help)
        self.add_flags(parser)
        return parser

    def check_args(self, parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        """Usage errors before any work (or submission): the protocol's, then an unwritable ``--output-dir``."""
        self.check_flags(parser, args)
        if args.output_dir:
            check_writable_dir(parser, args.output_dir, "--output-dir")

    def main(self, args: argparse.Namespace) -> int:
        """Set up the run, load the backbone, run ``evaluate`` (:func:`run_backbone_eval`)."""
        return run_backbone_eval(args, self.evaluate)

    def cli_main(self, argv: Sequence[str] | None = None) -> int:
        """The console script: parse ``argv`` (default ``sys.argv``), check (usage errors), run."""
        return run_protocol_cli(self.get_args_parser, self.check_args, self.main, self.description, argv)

    def entry_points(self) -> tuple[Callable, Callable, Callable, Callable]:
        """``(get_args_parser, check_args, main, cli_main)``, the names the protocol's module publishes."""
        return self.get_args_parser, self.check_args, self.main, self.cli_main
