"""Instance retrieval on revisited Oxford and Paris: the command line and the model-level entry point.

    python -m dinov2.eval.retrieval --model dinov2_vitl14 --data-root /data/revisitop --output-dir out/retrieval
    python -m dinov2.eval.retrieval --config-file runs/exp1/config.yaml \\
        --weights runs/exp1/eval/training_12499/teacher_checkpoint.pth --data-root /data/revisitop \\
        --output-dir out/retrieval --imsize 512 --multiscale --crop-queries

(or ``dinov2-eval-retrieval``, or ``dinov2/run/eval/retrieval.py`` on SLURM). Each query is ranked against the
database of its dataset by cosine similarity of the descriptors (:mod:`~dinov2.eval.retrieval.descriptors`), the
ranking is scored with the revisited protocol (:mod:`~dinov2.eval.retrieval.metrics`: mAP and mP@k, Easy, Medium
and Hard; the papers report Medium and Hard mAP). Defaults follow DINO v1's retrieval evaluation: queries not
cropped (the revisited protocol prescribes cropping them to their box: ``--crop-queries``), single scale, class
token, ``--imsize 224``. ``--distractors`` adds images (e.g. the revisitop 1M distractors as a flat folder,
``ImageFolder:root=/data/revisitop1m``) to every database.

Results: ``results_eval_retrieval.json`` (one ``{"<dataset> <protocol> mAP": %}`` line per value) and
``results_eval_retrieval_detailed.json`` (AP of every query, the settings).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from dinov2.data import make_dataset
from dinov2.eval.common import BackboneProtocol, finish_eval_run
from dinov2.eval.results import format_table
from dinov2.eval.retrieval.data import DATASETS, ImageList, ground_truth_path, read_ground_truth
from dinov2.eval.retrieval.descriptors import MULTI_SCALES, POOLINGS, RetrievalDescriptor, RetrievalTransform
from dinov2.eval.retrieval.metrics import DEFAULT_KAPPAS, PROTOCOLS, evaluate_protocols
from dinov2.eval.retrieval.search import SEARCH_BACKENDS, rank_database
from dinov2.features.backbone import LoadedBackbone, autocast_context
from dinov2.features.extract import extract_features
from dinov2.utils.cli import usage_errors
from dinov2.utils.safe_pickle import UnsafePickleError

logger = logging.getLogger("dinov2")

__all__ = ["get_args_parser", "check_args", "eval_retrieval_with_model", "main", "cli_main"]

DESCRIPTION = "DINOv2 instance retrieval (revisited Oxford / Paris)"


def _add_flags(parser: argparse.ArgumentParser) -> None:
    """The retrieval settings (after the backbone flags of :func:`~dinov2.features.backbone_args.add_backbone_args`)."""
    add = parser.add_argument
    add("--data-root", required=True, help="folder holding roxford5k/ and rparis6k/ (jpg/ and gnd_<dataset>.pkl)")
    add("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS), help="datasets to evaluate")
    add("--imsize", type=int, default=224, help="longest image side (px; never enlarged), rounded to the patch grid")
    add("--multiscale", action="store_true", help=f"average the descriptors at scales {MULTI_SCALES} (DINO v1)")
    add("--crop-queries", action="store_true", help="crop each query to its box (the revisited protocol's rule)")
    add("--pooling", choices=POOLINGS, default="cls", help="class token, or GeM over the patch tokens")
    add("--gem-p", type=float, default=3.0, help="GeM exponent")
    add("--distractors", default=None, help="dataset string of images added to every database")
    add("--search", choices=SEARCH_BACKENDS, default="exact", help="exact torch search, or a flat faiss index")
    add("--topk", type=int, default=0, help="ranking length (0: the whole database, exact mAP)")
    add("--kappas", type=int, nargs="+", default=list(DEFAULT_KAPPAS), help="k of the mean precision at k")
    add("--num-workers", type=int, default=4, help="data-loading processes")
    add("--no-progress", action="store_true", help="no progress bar during feature extraction")


def _check_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Missing image folders, missing or unreadable ground truth, bad sizes."""
    for dataset in args.datasets:
        folder = Path(args.data_root) / dataset / "jpg"
        if not folder.is_dir():
            parser.error(f"--data-root: {str(folder)!r} does not exist; extract the {dataset} images there")
        truth = ground_truth_path(args.data_root, dataset)
        if not truth.is_file():
            parser.error(f"--data-root: no gnd_{dataset}.pkl (or .json) in {str(folder.parent)!r}; download it there")
        with usage_errors(parser, ValueError, UnsafePickleError, flag="--data-root"):  # before any model is built
            read_ground_truth(truth)  # small; not a pickle / JSON, not plain data, or the wrong content
    if args.imsize < 1 or any(k < 1 for k in args.kappas) or args.topk < 0:
        parser.error(
            f"--imsize and --kappas must be >= 1 and --topk >= 0, got {args.imsize}, {args.kappas}, {args.topk}"
        )


def _descriptors(descriptor, dataset, description: str, num_workers: int, progress: bool) -> torch.Tensor:
    # batch 1: images keep their own aspect ratio, so sizes differ
    features, _ = extract_features(descriptor, dataset, 1, num_workers, progress=progress, description=description)
    return features.cpu()


def _evaluate_dataset(descriptor, transform, data_root: str, name: str, extra, options: dict) -> dict:
    """Scores of one dataset: descriptors of its database (+ ``extra`` distractors) and queries, ranking, metrics."""
    truth = read_ground_truth(ground_truth_path(data_root, name))
    folder = Path(data_root) / name / "jpg"
    boxes = [entry["bbx"] for entry in truth.gnd] if options["crop_queries"] else None
    load = dict(num_workers=options["num_workers"], progress=options["progress"])
    database = _descriptors(
        descriptor, ImageList(folder, truth.imlist, transform), description=f"{name} database", **load
    )
    queries = _descriptors(
        descriptor, ImageList(folder, truth.qimlist, transform, boxes), description=f"{name} queries", **load
    )
    if extra is not None:
        database = torch.cat([database, extra])
    ranks = rank_database(queries, database, options["topk"], options["search"])
    scores = evaluate_protocols(ranks, truth.gnd, options["kappas"])
    return {"num_database": len(database), "num_queries": len(queries), **scores}


def eval_retrieval_with_model(
    backbone: LoadedBackbone,
    data_root: str,
    datasets: Sequence[str] = DATASETS,
    *,
    imsize: int = 224,
    multiscale: bool = False,
    crop_queries: bool = False,
    pooling: str = "cls",
    gem_p: float = 3.0,
    distractors: str | None = None,
    search: str = "exact",
    topk: int = 0,
    kappas: Sequence[int] = DEFAULT_KAPPAS,
    num_workers: int = 4,
    progress: bool = True,
    output_dir: str | None = None,
    run_args=None,
) -> dict[str, float]:
    """Retrieval scores of ``backbone`` (from :func:`dinov2.features.load_backbone`) on each dataset (collective).

    Returns ``{"<dataset> <protocol> mAP": %, "<dataset> <protocol> mP@<k>": %, ...}`` and writes the result files.
    """
    start = time.perf_counter()
    transform = RetrievalTransform(imsize, backbone.patch_size, backbone.mean, backbone.std)
    scales = MULTI_SCALES if multiscale else (1.0,)
    descriptor = RetrievalDescriptor(backbone.model, backbone.patch_size, pooling, scales, gem_p)
    options = dict(crop_queries=crop_queries, topk=topk, search=search, kappas=kappas)
    options.update(num_workers=num_workers, progress=progress)
    device = next(backbone.model.parameters()).device
    flat, detailed, rows = {}, {}, []
    with autocast_context(backbone.autocast_dtype, device)():
        extra = None
        if distractors:
            images = make_dataset(dataset_str=distractors, transform=transform)
            extra = _descriptors(descriptor, images, "distractors", num_workers, progress)
        for name in datasets:
            detailed[name] = _evaluate_dataset(descriptor, transform, data_root, name, extra, options)
            for protocol in PROTOCOLS:
                row = {"dataset": name, "protocol": protocol, "mAP": detailed[name][protocol]["mAP"]}
                row.update({f"mP@{k}": v for k, v in detailed[name][protocol]["mP@k"].items()})
                flat.update({f"{name} {protocol} {key}": v for key, v in row.items() if key.startswith("m")})
                rows.append(row)
    logger.info("\n%s", format_table(rows, title="Retrieval (revisited protocol, %)"))
    settings = dict(imsize=imsize, multiscale=multiscale, pooling=pooling, backbone=backbone.source, **options)
    record = {
        "protocol": "retrieval",
        "results": flat,
        "datasets": detailed,
        "settings": settings,
        "distractors": distractors,
    }
    finish_eval_run(output_dir, "retrieval", flat, record, start=start, run_args=run_args)
    return flat


# cli_main: ``dinov2-eval-retrieval`` / ``python -m dinov2.eval.retrieval``; the SLURM launcher reads the others
CLI = BackboneProtocol(DESCRIPTION, _add_flags, _check_flags, eval_retrieval_with_model)
get_args_parser, check_args, main, cli_main = CLI.entry_points()
