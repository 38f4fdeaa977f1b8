"""The pipeline config of ``python -m dinov2.curation run``: defaults (dataclasses) <- YAML file <- ``key=value``.

Keys are strict, as for training configs: an unknown key is an error naming it and the closest valid keys, a
value of the wrong type or a missing required value (``???``) is an error naming the key. Named sets
(``relative_dedup.references.<name>``, ``retrieval.queries.<name>``, ``as_is.<name>``) take any name. See
``configs/curation/*.yaml`` for presets and the notes for the meaning of each key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from omegaconf import MISSING

from dinov2.config import Checker, ConfigFolder, load_dataclass_config

__all__ = ["CurationConfig", "CurationConfigError", "load_curation_config"]


class CurationConfigError(ValueError):
    """A curation config names an unknown key or holds a bad value."""


@dataclass
class ImageSet:
    dataset: str = MISSING  # dataset string, e.g. ImageFolder:root=/data/pool
    embeddings: str = ""  # precomputed embeddings (.npy or embed folder) in dataset order; "" = embed here


@dataclass
class PoolSet(ImageSet):
    weight: float = 0.0  # the whole deduplicated pool as a part of the manifest (0: left out)


@dataclass
class QuerySet(ImageSet):
    mode: str = "auto"  # sample | cluster | auto (sample-based above retrieval.auto_threshold queries)
    k: int = 4
    unique: bool = False
    weight: float = 1.0


@dataclass
class AsIsSet:
    dataset: str = MISSING
    weight: float = 1.0


@dataclass
class EmbedSection:
    config_file: str = ""  # backbone config (eval / training config.yaml), a hub name, or "": read from the weights
    pretrained_weights: str = ""
    opts: list[str] = field(default_factory=list)
    batch_size: int = 64
    num_workers: int = 8
    crop_size: int = 224
    resize_size: int = 256
    shard_size: int = 1 << 18
    strict: bool = False  # unreadable images stop the step (default: left out, listed in unreadable.txt)


@dataclass
class SearchSection:
    backend: str = "torch"  # torch | faiss | auto
    index: str = "Flat"  # faiss index_factory string, e.g. IVF65536,PQ64
    nprobe: int = 16
    chunk_size: int = 0  # queries per exact-search block; 0 = automatic
    train_size: int = 1 << 18


@dataclass
class DedupSection:
    enabled: bool = True
    k: int = 64
    threshold: float = 0.6


@dataclass
class RelativeDedupSection:
    references: dict[str, ImageSet] = field(default_factory=dict)
    k: int = 64
    threshold: float = 0.45


@dataclass
class RetrievalSection:
    queries: dict[str, QuerySet] = field(default_factory=dict)
    auto_threshold: int = 1_000_000
    n_clusters: int = 100_000
    n_iters: int = 50
    min_queries: int = 3
    per_cluster: int = 10_000
    cap: int = 1_000_000


@dataclass
class KMeansSection:
    enabled: bool = False
    n_clusters: list[int] = field(default_factory=list)
    n_resampling_steps: list[int] = field(default_factory=list)
    sample_size: list[int] = field(default_factory=list)
    n_iters: int = 50
    strategy: str = "closest"  # resampling: closest | random
    dtype: str = "float32"
    checkpoint_every: int = 5


@dataclass
class SampleSection:
    target_size: int = 0
    multiplier: int = 1
    strategy: str = "random"  # random | closest
    weight: float = 1.0


@dataclass
class PicturesSection:
    levels: list[int] = field(default_factory=lambda: [1])
    clusters: int = 16
    per_cluster: int = 8
    size: int = 64


@dataclass
class CurationConfig:
    output_dir: str = ""
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    progress: bool = True
    embed: EmbedSection = field(default_factory=EmbedSection)
    pool: PoolSet = field(default_factory=PoolSet)
    search: SearchSection = field(default_factory=SearchSection)
    dedup: DedupSection = field(default_factory=DedupSection)
    relative_dedup: RelativeDedupSection = field(default_factory=RelativeDedupSection)
    retrieval: RetrievalSection = field(default_factory=RetrievalSection)
    kmeans: KMeansSection = field(default_factory=KMeansSection)
    sample: SampleSection = field(default_factory=SampleSection)
    pictures: PicturesSection = field(default_factory=PicturesSection)
    as_is: dict[str, AsIsSet] = field(default_factory=dict)


_FOLDER = ConfigFolder(what="curation config", like="configs/curation/small.yaml", example="dedup.k=32")


_CHOICES = {
    "device": ("auto", "cpu", "cuda"),
    "search.backend": ("torch", "faiss", "auto"),
    "kmeans.strategy": ("closest", "random"),
    "kmeans.dtype": ("float32", "float64"),
    "sample.strategy": ("random", "closest"),
}


def _check_values(c: Checker, cfg: CurationConfig) -> None:
    for path, choices in _CHOICES.items():
        c.choice(path, choices)
    for path in ("dedup.threshold", "relative_dedup.threshold"):
        c.check(path, lambda v: -1 <= v < 1, "a cosine similarity in [-1, 1)")
    for name, query in cfg.retrieval.queries.items():
        if query.mode not in ("sample", "cluster", "auto") or query.k < 1 or query.weight < 0:
            c.errors.append(
                f"retrieval.queries.{name}: mode sample|cluster|auto, k >= 1, weight >= 0 (got "
                f"{query.mode!r}, {query.k}, {query.weight})"
            )
    km = cfg.kmeans
    if km.enabled:
        if not km.n_clusters or not (len(km.n_clusters) == len(km.n_resampling_steps) == len(km.sample_size)):
            c.errors.append(
                "kmeans.n_clusters, kmeans.n_resampling_steps and kmeans.sample_size need one value per "
                f"level, got {km.n_clusters}, {km.n_resampling_steps}, {km.sample_size}"
            )
        if cfg.sample.weight > 0 and cfg.sample.target_size < 1:
            c.errors.append("sample.target_size: the balanced sample needs a size >= 1 (or sample.weight=0)")
    weights = [cfg.pool.weight, cfg.sample.weight, *(a.weight for a in cfg.as_is.values())]
    if any(w < 0 for w in weights):
        c.errors.append(f"weights must be >= 0, got {weights}")


def load_curation_config(
    config_file: str | os.PathLike | None = None, opts: list[str] | None = None, output_dir: str | None = None
) -> CurationConfig:
    """Defaults <- ``config_file`` (a path or a packaged name such as ``curation/small``) <- ``opts`` <- ``output_dir``,
    checked; raises :class:`CurationConfigError` naming unknown keys (with the closest valid ones) and bad values."""
    return load_dataclass_config(
        CurationConfig, config_file, opts, output_dir, _FOLDER, CurationConfigError, check=_check_values
    )
