"""The whole curation from one config (``python -m dinov2.curation run --config-file curation.yaml``).

Order (each step writes its outputs under ``output_dir`` and is skipped on a re-run once complete):

1. ``embeddings/<set>/``: embed the pool, the reference sets and the query sets (unless ``embeddings:`` names
   precomputed ones) with the ``embed`` backbone;
2. ``dedup/``: self-deduplication of the pool (``dedup.enabled``);
3. ``dedup_relative/<reference>/``: relative deduplication against each reference set, one after the other,
   each on the rows kept so far;
4. ``retrieval/<query set>/``: sample- or cluster-based retrieval from the deduplicated pool (a cluster-based
   query set shares the pool clustering ``retrieval/pool_clusters/``);
5. ``kmeans/`` and ``sample/indices.npy``: hierarchical k-means of the deduplicated pool and the balanced sample
   (``kmeans.enabled``), with ``pictures/level<t>.png``;
6. ``manifest.json`` (+ ``parts/``): one part per source set with its weight: ``pool`` (the deduplicated pool,
   ``pool.weight``), ``retrieved/<query set>``, ``balanced`` (``sample.weight``), ``as_is/<set>`` (whole
   datasets). Train on it with ``train.dataset_path=Curated:manifest=<output_dir>/manifest.json``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from dinov2.curation import parallel
from dinov2.curation._features import build_backbone, default_device
from dinov2.curation.arrays import RowSet
from dinov2.curation.config import CurationConfig, CurationConfigError, ImageSet
from dinov2.curation.dedup import deduplicate
from dinov2.curation.embed import dataset_indices, embed_dataset_str, images_in_row_order
from dinov2.curation.files import begin_step, load_npy, mark_done, read_json, save_npy
from dinov2.curation.hierarchy import hierarchical_kmeans
from dinov2.curation.knn import SearchOptions
from dinov2.curation.manifest import Part, write_manifest
from dinov2.curation.pictures import write_cluster_grid
from dinov2.curation.retrieval import cluster_pool, retrieve_by_clusters, retrieve_by_samples
from dinov2.curation.sampling import hierarchical_sample
from dinov2.data import make_dataset
from dinov2.utils.utils import get_sha

logger = logging.getLogger("dinov2")

__all__ = ["Pipeline", "run_pipeline"]


class Pipeline:
    """The steps of one curation run (see the module docstring); ``run()`` executes them (collective)."""

    def __init__(self, cfg: CurationConfig):
        self.cfg = cfg
        self.out = Path(cfg.output_dir)
        device = default_device() if cfg.device == "auto" else torch.device(cfg.device)
        self.device = device
        search = cfg.search
        self.search = SearchOptions(
            backend=search.backend,
            index=search.index,
            nprobe=search.nprobe,
            chunk_size=search.chunk_size or None,
            device=str(device),
            train_size=search.train_size,
            seed=cfg.seed,
        )
        self._model = None
        self._pool_path: Path | None = None  # the pool's embeddings: rows -> dataset indices (unreadable left out)

    def embeddings(self, name: str, image_set: ImageSet) -> Path:
        """The embeddings of ``image_set``: precomputed, or computed into ``embeddings/<name>``."""
        if image_set.embeddings:
            path = Path(image_set.embeddings)
            meta = path / "meta.json" if path.is_dir() else None
            recorded = read_json(meta, name)["params"].get("dataset") if meta and meta.is_file() else None
            if recorded not in (None, image_set.dataset):
                raise ValueError(
                    f"{name}: embeddings {str(path)!r} were made for {recorded!r}, not "
                    f"{image_set.dataset!r}: rows would not match the dataset"
                )
            return path
        embed = self.cfg.embed
        if not embed.pretrained_weights:  # embed.config_file "" : the architecture is read from the weights
            raise ValueError(f"{name}: set embed.pretrained_weights (and embed.config_file), or {name}.embeddings")
        if self._model is None:
            self._model = build_backbone(embed.config_file, embed.pretrained_weights, embed.opts, self.device)
        model, autocast_dtype = self._model
        return embed_dataset_str(
            model, autocast_dtype, image_set.dataset, self.out / "embeddings" / name, embed, self.cfg.progress
        )

    def deduplicated_pool(self) -> RowSet:
        cfg = self.cfg
        pool_path = self._pool_path = self.embeddings("pool", cfg.pool)
        pool = RowSet.open(pool_path, "pool")
        if cfg.dedup.enabled:
            k = min(cfg.dedup.k, len(pool))  # a pool smaller than dedup.k: every row is a neighbour of every row
            deduplicate(pool, self.out / "dedup", k=k, threshold=cfg.dedup.threshold, options=self.search)
            total, pool = len(pool), RowSet.open(pool_path, "pool", self.out / "dedup" / "kept_indices.npy")
            _report_dedup(total, len(pool), cfg.dedup.threshold)
        relative = cfg.relative_dedup
        for name, reference in relative.references.items():
            rows = RowSet.open(self.embeddings(f"reference-{name}", reference), f"reference {name}")
            folder = self.out / "dedup_relative" / name
            deduplicate(pool, folder, k=relative.k, threshold=relative.threshold, reference=rows, options=self.search)
            pool = RowSet.open(pool_path, "pool", folder / "kept_indices.npy")
        return pool

    def retrieved(self, pool: RowSet) -> list[Part]:
        cfg, parts = self.cfg.retrieval, []
        for name, query in cfg.queries.items():
            queries = RowSet.open(self.embeddings(f"queries-{name}", query), f"query set {name}")
            mode = (
                query.mode if query.mode != "auto" else ("sample" if len(queries) > cfg.auto_threshold else "cluster")
            )
            folder = self.out / "retrieval" / name
            if mode == "sample":
                found = retrieve_by_samples(pool, queries, folder, k=query.k, unique=query.unique, options=self.search)
            else:
                clusters = cluster_pool(
                    pool,
                    self.out / "retrieval" / "pool_clusters",
                    min(cfg.n_clusters, len(pool)),
                    n_iters=cfg.n_iters,
                    seed=self.cfg.seed,
                    device=self.device,
                )
                found = retrieve_by_clusters(
                    pool,
                    queries,
                    folder,
                    clusters,
                    min_queries=cfg.min_queries,
                    per_cluster=cfg.per_cluster,
                    cap=cfg.cap,
                    seed=self.cfg.seed,
                )
            parts.append(Part(f"retrieved/{name}", self.cfg.pool.dataset, found, query.weight, {"mode": mode}))
        return parts

    def balanced(self, pool: RowSet) -> list[Part]:
        cfg = self.cfg
        km, sample = cfg.kmeans, cfg.sample
        if not km.enabled:
            return []
        if km.n_clusters[0] > len(pool):
            raise CurationConfigError(
                f"kmeans.n_clusters={list(km.n_clusters)} needs at least {km.n_clusters[0]} images at level 1 but the "
                f"pool holds {len(pool)} (after deduplication); lower kmeans.n_clusters (and kmeans.sample_size), "
                "e.g. about one cluster per 10-50 images, or curate more images"
            )
        folder = self.out / "kmeans"
        hierarchical_kmeans(
            pool,
            folder,
            km.n_clusters,
            km.n_resampling_steps,
            km.sample_size,
            n_iters=km.n_iters,
            strategy=km.strategy,
            seed=cfg.seed,
            dtype=km.dtype,
            device=self.device,
            checkpoint_every=km.checkpoint_every,
        )
        params = {
            "target_size": sample.target_size,
            "multiplier": sample.multiplier,
            "strategy": sample.strategy,
            "seed": cfg.seed,
        }
        if not begin_step(self.out / "sample", "sample", params) and parallel.is_main():
            picked = hierarchical_sample(
                folder, sample.target_size, multiplier=sample.multiplier, strategy=sample.strategy, seed=cfg.seed
            )
            save_npy(self.out / "sample" / "indices.npy", picked)
            mark_done(self.out / "sample", "sample", params, count=len(picked))
        parallel.barrier()
        if parallel.is_main() and cfg.pictures.levels:
            self._pictures(folder)
        picked = load_npy(self.out / "sample" / "indices.npy", "balanced sample", mmap=False)
        return [Part("balanced", cfg.pool.dataset, picked, sample.weight, {"levels": list(km.n_clusters)})]

    def _pictures(self, folder: Path) -> None:
        pictures = self.cfg.pictures
        dataset = images_in_row_order(self._pool_path, make_dataset(dataset_str=self.cfg.pool.dataset))
        for level in pictures.levels:
            if level <= len(self.cfg.kmeans.n_clusters):
                write_cluster_grid(
                    folder,
                    dataset,
                    self.out / "pictures" / f"level{level}.png",
                    level=level,
                    clusters=pictures.clusters,
                    per_cluster=pictures.per_cluster,
                    size=pictures.size,
                    seed=self.cfg.seed,
                )

    def run(self) -> Path:
        """Run every step (collective); returns the manifest path."""
        cfg = self.cfg
        if parallel.is_main():
            self.out.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(OmegaConf.structured(cfg), self.out / "config.yaml")
        pool = self.deduplicated_pool()
        parts = []
        if cfg.pool.weight > 0:
            parts.append(Part("pool", cfg.pool.dataset, pool.original(np.arange(len(pool))), cfg.pool.weight))
        parts += self.retrieved(pool)
        parts += self.balanced(pool)
        for part in parts:  # pool rows -> dataset indices (they differ when embed left unreadable images out)
            part.indices = dataset_indices(self._pool_path, part.indices)
        for name, as_is in cfg.as_is.items():
            count = len(make_dataset(dataset_str=as_is.dataset))
            parts.append(Part(f"as_is/{name}", as_is.dataset, np.arange(count, dtype=np.int64), as_is.weight))
        manifest = self.out / "manifest.json"
        if parallel.is_main():
            write_manifest(
                manifest, parts, {"git": get_sha(), "config": OmegaConf.to_container(OmegaConf.structured(cfg))}
            )
        parallel.barrier()
        return manifest


def _report_dedup(total: int, kept: int, threshold: float) -> None:
    """Log what deduplication kept; warn when it dropped most of the pool (components chained by a low threshold)."""
    logger.info("dedup: kept %d of %d images", kept, total)
    if total and kept < 0.5 * total:
        logger.warning(
            "dedup dropped %.1f %% of the pool (kept %d of %d): at dedup.threshold=%s near-duplicate pairs chain "
            "distinct images into one component; for a set without many copies raise dedup.threshold (e.g. 0.8-0.9) "
            "or set dedup.enabled=false",
            100.0 * (total - kept) / total,
            kept,
            total,
            threshold,
        )


def run_pipeline(cfg: CurationConfig) -> Path:
    """Run the pipeline of ``cfg``; returns the path of the written manifest."""
    return Pipeline(cfg).run()
