"""``python -m dinov2.curation <step> ...``: the command line of every curation step.

Steps: ``embed``, ``dedup``, ``retrieve``, ``kmeans``, ``sample``, ``pictures`` and ``run`` (the whole pipeline
from a YAML config). Each joins the process group of torchrun / SLURM when launched by one (``embed``,
``dedup``, ``retrieve``, ``kmeans`` and ``run`` then split their rows over the processes; ``sample`` and
``pictures`` run on rank 0) and logs to ``<output>/logs/``. ``python -m dinov2.curation <step> --help`` (or
``dinov2-curation <step> --help``) lists the flags and their defaults. ``embed`` takes backbone-config overrides
``key=value`` at the end (or after ``--opts``), ``run`` curation-config overrides at the end; their configs, files and
dataset strings are checked before any work (usage errors, exit code 2).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from dinov2 import distributed
from dinov2.curation import parallel
from dinov2.curation.embed import DEFAULT_SHARD_SIZE
from dinov2.curation.knn import BACKENDS
from dinov2.utils.cli import ArgumentParser, add_opts_flag, add_output_dir, add_overrides, usage_errors

logger = logging.getLogger("dinov2")

__all__ = ["get_args_parser", "check_args", "main", "cli_main"]


def _search_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("nearest-neighbour search")
    group.add_argument("--backend", default="torch", choices=BACKENDS, help="torch (exact), faiss, auto")
    group.add_argument("--index", default="Flat", help="faiss index_factory string, e.g. IVF4096,PQ32")
    group.add_argument("--nprobe", type=int, default=16, help="inverted lists visited per query (IVF indices)")
    group.add_argument("--chunk-size", type=int, default=None, help="queries per exact-search block (default: auto)")


def _rows_flags(parser: argparse.ArgumentParser, subset_help: str) -> None:
    """The rows a step reads (one :class:`~dinov2.curation.arrays.RowSet`): ``--embeddings`` and an optional
    ``--subset`` of them."""
    parser.add_argument("--embeddings", required=True, help=".npy [N, D] or an embed output folder")
    parser.add_argument("--subset", default=None, help=subset_help)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto (this rank's GPU if any), cpu, cuda")
    parser.add_argument("--seed", type=int, default=0, help="random seed")


def _add_embed(sub) -> None:
    p = sub.add_parser("embed", help="L2-normalised float16 embeddings of a dataset, in shards")
    p.add_argument(
        "--config-file",
        required=True,
        help="backbone config (e.g. dinov2/configs/eval/vitl14_pretrain.yaml), a hub backbone name (dinov3_vitl16), "
        "or '': the architecture read from --pretrained-weights",
    )
    p.add_argument("--pretrained-weights", required=True, help="teacher_checkpoint.pth, hub .pth or URL")
    p.add_argument("--dataset", required=True, help="dataset string, e.g. ImageFolder:root=/data/pool")
    add_output_dir(p, "folder of the embedding shards", required=True)
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass (per process)")
    p.add_argument("--num-workers", type=int, default=8, help="data-loading processes")
    p.add_argument("--crop-size", type=int, default=224, help="centre crop (released eval: 224)")
    p.add_argument("--resize-size", type=int, default=256, help="short side before the crop (released eval: 256)")
    p.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE, help="rows per .npy shard")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--strict",
        action="store_true",
        help="stop at unreadable images, naming them (default: leave them out, listed in unreadable.txt)",
    )
    add_opts_flag(p, "the backbone config")
    add_overrides(p, "the backbone config (at the end of the command)")


def _add_dedup(sub) -> None:
    p = sub.add_parser("dedup", help="k-NN graph above a cosine threshold, connected components, one kept each")
    _rows_flags(p, "sorted int64 .npy of the rows to use (e.g. kept_indices.npy)")
    p.add_argument("--k", type=int, default=64, help="neighbours per row in the k-NN graph")
    p.add_argument("--threshold", type=float, default=0.6, help="edges above this cosine similarity (strict)")
    p.add_argument("--reference", default=None, help="relative dedup: drop every component touching these rows")
    add_output_dir(p, "folder of kept_indices.npy and the graph", required=True)
    _search_flags(p)
    _common(p)


def _add_retrieve(sub) -> None:
    p = sub.add_parser("retrieve", help="pool rows close to a query set (sample- or cluster-based)")
    p.add_argument("--pool", required=True, help="pool embeddings: .npy [N, D] or an embed output folder")
    p.add_argument("--queries", required=True, help="query embeddings: .npy [M, D] or an embed output folder")
    p.add_argument("--subset", default=None, help="sorted int64 .npy of the pool rows to use")
    add_output_dir(p, "folder of retrieved_indices.npy", required=True)
    p.add_argument("--k", type=int, default=4, help="sample-based: neighbours per query")
    p.add_argument("--unique", action="store_true", help="sample-based: keep each pool row once")
    p.add_argument("--clusters", type=int, default=None, help="cluster-based: k-means of the pool into N clusters")
    p.add_argument("--pool-clusters", default=None, help="cluster-based: folder of an existing pool clustering")
    p.add_argument("--min-queries", type=int, default=3, help="clusters with MORE than this many queries qualify")
    p.add_argument("--per-cluster", type=int, default=10_000, help="cluster-based: pool rows taken per cluster")
    p.add_argument("--cap", type=int, default=1_000_000, help="cluster-based: the most pool rows retrieved")
    p.add_argument("--n-iters", type=int, default=50, help="cluster-based: k-means iterations of the pool clustering")
    _search_flags(p)
    _common(p)


def _add_kmeans(sub) -> None:
    p = sub.add_parser("kmeans", help="hierarchical k-means with resampling")
    _rows_flags(p, "sorted int64 .npy of the rows to cluster")
    p.add_argument("--n-clusters", type=int, nargs="+", required=True, help="clusters per level, bottom up")
    p.add_argument(
        "--n-resampling-steps", type=int, nargs="+", default=None, help="per level (default: 0 for every level)"
    )
    p.add_argument(
        "--sample-size", type=int, nargs="+", default=None, help="rows per cluster per step (default: 1 per level)"
    )
    p.add_argument(
        "--resampling-strategy", default="closest", choices=["closest", "random"], help="rows drawn per resampling"
    )
    p.add_argument("--n-iters", type=int, default=50, help="Lloyd iterations per level")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"], help="precision of the centroids")
    p.add_argument("--checkpoint-every", type=int, default=5, help="Lloyd iterations between checkpoints")
    add_output_dir(p, "folder of the clustering (one sub-folder per level)", required=True)
    _common(p)


def _add_sample(sub) -> None:
    p = sub.add_parser("sample", help="hierarchical balanced sampling from a kmeans output")
    p.add_argument("--clustering", required=True, help="the kmeans --output-dir")
    p.add_argument("--target-size", type=int, required=True, help="number of rows to sample")
    p.add_argument("--multiplier", type=int, default=1, help="the most times one point may be taken")
    p.add_argument("--strategy", default="random", choices=["random", "closest"], help="rows taken in a cluster")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--output", required=True, help="int64 .npy of the sampled images (dataset indices)")


def _add_pictures(sub) -> None:
    p = sub.add_parser("pictures", help="PNG grid of images per cluster")
    p.add_argument("--clustering", required=True, help="the kmeans --output-dir")
    p.add_argument("--dataset", required=True, help="the dataset string that was embedded")
    p.add_argument("--output", required=True, help=".png file")
    p.add_argument("--level", type=int, default=1, help="clustering level shown (1: the finest)")
    p.add_argument("--clusters", type=int, default=16, help="clusters shown (rows of the grid)")
    p.add_argument("--per-cluster", type=int, default=8, help="images per cluster (columns)")
    p.add_argument("--size", type=int, default=64, help="thumbnail side in pixels")
    p.add_argument("--seed", type=int, default=0, help="random seed of the clusters and images shown")


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="the whole pipeline from a YAML config, writing a manifest")
    p.add_argument("--config-file", required=True, help="curation YAML (e.g. configs/curation/small.yaml)")
    add_output_dir(p, "overrides output_dir of the config", default=None)
    p.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY=VALUE", help="curation config overrides, at the end")


def get_args_parser() -> argparse.ArgumentParser:
    """``<step> [flags]``: one sub-command per step (defaults shown by ``<step> --help``)."""
    parser = ArgumentParser(description="DINOv2 data curation (LVD-142M style), one step per command")
    sub = parser.add_subparsers(dest="step", required=True, metavar="step")
    for add in (_add_embed, _add_dedup, _add_retrieve, _add_kmeans, _add_sample, _add_pictures, _add_run):
        add(sub)
    return parser


def _log_folder(args) -> str:
    if getattr(args, "output_dir", None):
        return args.output_dir
    return str(Path(args.output).parent)


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors (exit code 2) before any work for what the step would fail on later: for ``embed`` the
    backbone config and overrides, the weights and the dataset string; for ``run`` the curation config."""
    if args.step == "embed":
        from dinov2.features.backbone_args import check_eval_args

        check_eval_args(parser, args, [("--dataset", "dataset", True)], hub_names=True)
    elif args.step == "run":
        from dinov2.curation.config import CurationConfigError, load_curation_config

        with usage_errors(parser, FileNotFoundError, CurationConfigError):
            load_curation_config(args.config_file, args.opts, args.output_dir)


def main(argv: list[str] | None = None):
    """Parse ``argv`` (default ``sys.argv``), check it (:func:`check_args`) and run the step; returns its main
    output path."""
    from dinov2.curation import steps
    from dinov2.logging import setup_logging

    parser = get_args_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    distributed.enable(overwrite=True)
    if args.step != "run":
        setup_logging(output=_log_folder(args), level=logging.INFO)
    result = getattr(steps, args.step)(args)
    if parallel.is_main() and result is not None:
        print(f"{args.step}: {result}")
    return result


def cli_main(argv: list[str] | None = None) -> int:
    """``dinov2-curation`` / ``python -m dinov2.curation``: run the step of ``argv`` (default ``sys.argv``)."""
    main(argv)
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
