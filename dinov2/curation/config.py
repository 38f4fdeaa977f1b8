"""The pipeline config of ``python -m dinov2.curation run``: defaults (dataclasses) <- YAML file <- ``key=value``.

Keys are strict, as for training configs: an unknown key is an error naming it and the closest valid keys, a
value of the wrong type or a missing required value (``???``) is an error naming the key. Named sets
(``relative_dedup.references.<name>``, ``retrieval.queries.<name>``, ``as_is.<name>``) take any name. See
``configs/curation/*.yaml`` for presets and the notes for the meaning of each key.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from dataclasses import dataclass, field

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dinov2.utils.config import parse_overrides, resolve_config_file

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
    config_file: str = ""  # backbone config (eval config of a hub model, or a training config.yaml)
    pretrained_weights: str = ""
    opts: list[str] = field(default_factory=list)
    batch_size: int = 64
    num_workers: int = 8
    crop_size: int = 224
    resize_size: int = 256
    shard_size: int = 1 << 18


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


def _hints(cls) -> dict[str, typing.Any]:
    return typing.get_type_hints(cls)


def _item_type(hint) -> type | None:
    """The dataclass of ``dict[str, X]`` items, else None."""
    if typing.get_origin(hint) is dict:
        item = typing.get_args(hint)[1]
        return item if dataclasses.is_dataclass(item) else None
    return None


def _valid_paths(cls, prefix: str = "") -> list[str]:
    paths = []
    for name, hint in _hints(cls).items():
        paths.append(prefix + name)
        if dataclasses.is_dataclass(hint):
            paths += _valid_paths(hint, f"{prefix}{name}.")
        elif _item_type(hint) is not None:
            paths += _valid_paths(_item_type(hint), f"{prefix}{name}.<name>.")
    return paths


def _unknown(tree: dict, cls, prefix: str = "", generic: str = "") -> list[tuple[str, str]]:
    """(path, path with ``<name>`` for named sets) of every key of ``tree`` that ``cls`` lacks."""
    hints, unknown = _hints(cls), []
    for key, value in tree.items():
        path, general = f"{prefix}{key}", f"{generic}{key}"
        if key not in hints:
            unknown.append((path, general))
        elif dataclasses.is_dataclass(hints[key]) and isinstance(value, dict):
            unknown += _unknown(value, hints[key], path + ".", general + ".")
        elif _item_type(hints[key]) is not None and isinstance(value, dict):
            for name, item in value.items():
                if isinstance(item, dict):
                    unknown += _unknown(item, _item_type(hints[key]), f"{path}.{name}.", f"{general}.<name>.")
    return unknown


def _suggest(general: str, valid: list[str]) -> list[str]:
    leaf = general.rsplit(".", 1)[-1]
    leaves = {v.rsplit(".", 1)[-1] for v in valid}
    close = difflib.get_close_matches(general, valid, n=3, cutoff=0.6)
    for close_leaf in difflib.get_close_matches(leaf, sorted(leaves), n=2, cutoff=0.75):
        close += [v for v in valid if v.rsplit(".", 1)[-1] == close_leaf]
    return list(dict.fromkeys(close))[:4]


def _check_keys(layer: DictConfig, source: str) -> None:
    unknown = _unknown(OmegaConf.to_container(layer, resolve=False), CurationConfig)
    if not unknown:
        return
    valid = _valid_paths(CurationConfig)
    lines = []
    for path, general in unknown:
        close = _suggest(general, valid)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        lines.append(f"  - unknown key {path!r}{hint}")
    raise CurationConfigError(f"{source}: {len(lines)} unknown curation config key(s):\n" + "\n".join(lines))


_CHOICES = {
    "device": ("auto", "cpu", "cuda"),
    "search.backend": ("torch", "faiss", "auto"),
    "kmeans.strategy": ("closest", "random"),
    "kmeans.dtype": ("float32", "float64"),
    "sample.strategy": ("random", "closest"),
}


def _check_values(cfg: CurationConfig) -> None:
    problems = []
    for path, choices in _CHOICES.items():
        value = OmegaConf.select(OmegaConf.structured(cfg), path)
        if value not in choices:
            problems.append(f"{path}: got {value!r}, expected one of {list(choices)}")
    for path, value in (
        ("dedup.threshold", cfg.dedup.threshold),
        ("relative_dedup.threshold", cfg.relative_dedup.threshold),
    ):
        if not -1 <= value < 1:
            problems.append(f"{path}: got {value}, expected a cosine similarity in [-1, 1)")
    for name, query in cfg.retrieval.queries.items():
        if query.mode not in ("sample", "cluster", "auto") or query.k < 1 or query.weight < 0:
            problems.append(
                f"retrieval.queries.{name}: mode sample|cluster|auto, k >= 1, weight >= 0 (got "
                f"{query.mode!r}, {query.k}, {query.weight})"
            )
    km = cfg.kmeans
    if km.enabled:
        if not km.n_clusters or not (len(km.n_clusters) == len(km.n_resampling_steps) == len(km.sample_size)):
            problems.append(
                "kmeans.n_clusters, kmeans.n_resampling_steps and kmeans.sample_size need one value per "
                f"level, got {km.n_clusters}, {km.n_resampling_steps}, {km.sample_size}"
            )
        if cfg.sample.weight > 0 and cfg.sample.target_size < 1:
            problems.append("sample.target_size: the balanced sample needs a size >= 1 (or sample.weight=0)")
    weights = [cfg.pool.weight, cfg.sample.weight, *(a.weight for a in cfg.as_is.values())]
    if any(w < 0 for w in weights):
        problems.append(f"weights must be >= 0, got {weights}")
    if not cfg.output_dir:
        problems.append("output_dir: required (--output-dir or output_dir: in the file)")
    if problems:
        raise CurationConfigError("invalid curation config:\n" + "\n".join(f"  - {p}" for p in problems))


def load_curation_config(
    config_file: str | os.PathLike | None = None, opts: list[str] | None = None, output_dir: str | None = None
) -> CurationConfig:
    """Defaults <- ``config_file`` (a path or a packaged name such as ``curation/small``) <- ``opts`` <- ``output_dir``,
    checked; raises :class:`CurationConfigError` naming unknown keys (with the closest valid ones) and bad values."""
    layers = []
    if config_file:
        path = resolve_config_file(config_file)
        layer = OmegaConf.load(path)
        if not isinstance(layer, DictConfig):
            raise CurationConfigError(f"curation config {str(path)!r} must hold a mapping of keys")
        _check_keys(layer, f"curation config {str(path)!r}")
        layers.append(layer)
    cli = parse_overrides(opts)
    _check_keys(cli, "command-line overrides")
    layers.append(cli)
    if output_dir:
        layers.append(OmegaConf.create({"output_dir": str(output_dir)}))
    try:
        merged = OmegaConf.merge(OmegaConf.structured(CurationConfig), *layers)
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        raise CurationConfigError(f"invalid curation config value: {error}") from None
    cfg.output_dir = os.path.abspath(os.path.expanduser(cfg.output_dir)) if cfg.output_dir else ""
    _check_values(cfg)
    return cfg
