"""The command-line steps: parsed arguments (:mod:`dinov2.curation.cli`) -> library calls -> output path."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from dinov2.curation import parallel
from dinov2.curation._features import build_backbone, default_device
from dinov2.curation.arrays import RowSet
from dinov2.curation.config import load_curation_config
from dinov2.curation.dedup import deduplicate
from dinov2.curation.embed import dataset_indices, embed_dataset_str, images_in_row_order
from dinov2.curation.files import save_npy
from dinov2.curation.hierarchy import hierarchical_kmeans
from dinov2.curation.knn import SearchOptions
from dinov2.curation.pictures import write_cluster_grid
from dinov2.curation.pipeline import run_pipeline
from dinov2.curation.retrieval import cluster_pool, retrieve_by_clusters, retrieve_by_samples
from dinov2.curation.sampling import clustered_embeddings, hierarchical_sample
from dinov2.data import make_dataset

logger = logging.getLogger("dinov2")

__all__ = ["embed", "dedup", "retrieve", "kmeans", "sample", "pictures", "run"]


def _device(args: argparse.Namespace) -> torch.device:
    return default_device() if args.device == "auto" else torch.device(args.device)


def _search(args: argparse.Namespace) -> SearchOptions:
    return SearchOptions(
        backend=args.backend,
        index=args.index,
        nprobe=args.nprobe,
        chunk_size=args.chunk_size,
        device=str(_device(args)),
        seed=args.seed,
    )


def embed(args: argparse.Namespace) -> Path:
    model, autocast_dtype = build_backbone(args.config_file, args.pretrained_weights, args.opts, default_device())
    return embed_dataset_str(model, autocast_dtype, args.dataset, args.output_dir, args, not args.no_progress)


def dedup(args: argparse.Namespace) -> Path:
    pool = RowSet.open(args.embeddings, "--embeddings", args.subset)
    reference = RowSet.open(args.reference, "--reference") if args.reference else None
    params = {"embeddings": str(args.embeddings), "subset": args.subset, "reference": args.reference}
    result = deduplicate(
        pool,
        args.output_dir,
        k=args.k,
        threshold=args.threshold,
        reference=reference,
        options=_search(args),
        params=params,
    )
    if parallel.is_main():
        print(f"kept {len(result.kept)} of {len(pool)} rows ({result.n_edges} edges above {args.threshold})")
    return Path(args.output_dir) / "kept_indices.npy"


def retrieve(args: argparse.Namespace) -> Path:
    pool = RowSet.open(args.pool, "--pool", args.subset)
    queries = RowSet.open(args.queries, "--queries")
    params = {"pool": str(args.pool), "queries": str(args.queries), "subset": args.subset}
    if args.clusters is None and args.pool_clusters is None:
        found = retrieve_by_samples(
            pool, queries, args.output_dir, k=args.k, unique=args.unique, options=_search(args), params=params
        )
    else:
        clusters = args.pool_clusters or cluster_pool(
            pool,
            Path(args.output_dir) / "pool_clusters",
            args.clusters,
            n_iters=args.n_iters,
            seed=args.seed,
            device=_device(args),
        )
        found = retrieve_by_clusters(
            pool,
            queries,
            args.output_dir,
            clusters,
            min_queries=args.min_queries,
            per_cluster=args.per_cluster,
            cap=args.cap,
            seed=args.seed,
            params=params,
        )
    if parallel.is_main():
        print(f"retrieved {len(found)} pool rows for {len(queries)} queries")
    return Path(args.output_dir) / "retrieved_indices.npy"


def kmeans(args: argparse.Namespace) -> Path:
    levels = len(args.n_clusters)
    steps = args.n_resampling_steps or [0] * levels
    sizes = args.sample_size or [1] * levels
    source = RowSet.open(args.embeddings, "--embeddings", args.subset)
    params = {"embeddings": str(args.embeddings), "subset": args.subset}
    return hierarchical_kmeans(
        source,
        args.output_dir,
        args.n_clusters,
        steps,
        sizes,
        n_iters=args.n_iters,
        strategy=args.resampling_strategy,
        seed=args.seed,
        dtype=args.dtype,
        device=_device(args),
        checkpoint_every=args.checkpoint_every,
        params=params,
    )


def sample(args: argparse.Namespace) -> Path:
    """Dataset indices of the sampled rows (they differ from the rows when ``embed`` left images out)."""
    if parallel.is_main():
        rows = hierarchical_sample(
            args.clustering, args.target_size, multiplier=args.multiplier, strategy=args.strategy, seed=args.seed
        )
        picked = dataset_indices(clustered_embeddings(args.clustering), rows)
        save_npy(args.output, picked)
        print(f"sampled {len(picked)} images ({len(set(picked.tolist()))} distinct) into {args.output}")
    parallel.barrier()
    return Path(args.output)


def pictures(args: argparse.Namespace) -> Path:
    if parallel.is_main():
        dataset = make_dataset(dataset_str=args.dataset)
        write_cluster_grid(
            args.clustering,
            images_in_row_order(clustered_embeddings(args.clustering), dataset),
            args.output,
            level=args.level,
            clusters=args.clusters,
            per_cluster=args.per_cluster,
            size=args.size,
            seed=args.seed,
        )
    parallel.barrier()
    return Path(args.output)


def run(args: argparse.Namespace) -> Path:
    from dinov2.logging import setup_logging

    cfg = load_curation_config(args.config_file, args.opts, args.output_dir)
    setup_logging(output=cfg.output_dir, level=logging.INFO)
    return run_pipeline(cfg)
