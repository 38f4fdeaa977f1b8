"""The one place where curation reaches into :mod:`dinov2.features`: the backbone door, feature extraction, exact k-NN.

The backbone comes through the one backbone door (:func:`dinov2.features.load_backbone`), and feature extraction and
the exact k-NN search are the ones the evaluation protocols use; every such import is here.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from dinov2.features import autocast_context, eval_device, extract, load_backbone
from dinov2.features import exact_knn as _exact_knn
from dinov2.features.knn_scoring import ModelWithNormalize
from dinov2.hub import catalog

__all__ = ["build_backbone", "default_device", "extract_normalised", "exact_knn"]


def default_device() -> torch.device:
    """This process's GPU when CUDA is available, else the CPU (as the evaluation scripts choose)."""
    return eval_device()


def build_backbone(
    config_file: str | None, pretrained_weights: str | os.PathLike, opts: list[str] | None = None, device=None
) -> tuple[nn.Module, torch.dtype]:
    """The teacher backbone of a training / eval config with ``pretrained_weights`` loaded strictly (frozen,
    eval mode) and the config's autocast dtype. Any backbone the evaluation scripts accept works here.

    ``config_file`` may also be a hub backbone name (``dinov3_vitl16``: its architecture, ``pretrained_weights``
    loaded into it) or empty (``pretrained_weights`` alone: the architecture read from the weights, e.g. a DINOv3
    file); both run in float32 and take no ``opts``."""
    if not config_file or str(config_file) in catalog.BACKBONES:
        if opts:
            raise ValueError(f"opts {list(opts)} override a config; {config_file or 'weights alone'} has none")
        source = (str(config_file), pretrained_weights) if config_file else (pretrained_weights, None)
        loaded = load_backbone(source[0], weights=source[1], device=device)
    else:
        overrides = list(opts or [])
        loaded = load_backbone(config=config_file, weights=pretrained_weights, overrides=overrides, device=device)
    return loaded.model, loaded.autocast_dtype


@torch.no_grad()
def extract_normalised(
    model: nn.Module, dataset, *, batch_size: int, num_workers: int, autocast_dtype: torch.dtype, progress: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised ``model(images)`` of every readable sample of ``dataset`` in order, float32 [n, D] on the CPU,
    and the sorted indices of the unreadable samples left out (int64), on every rank (collective: the ranks share
    the images and exchange the features). Unreadable images are never replaced by other ones."""
    device = next(model.parameters()).device
    normalised = ModelWithNormalize(model).eval()
    with autocast_context(autocast_dtype, device)():
        result = extract(
            normalised,
            dataset,
            batch_size,
            num_workers,
            store_device="cpu",
            progress=progress,
            description="embeddings",
        )
    return result.outputs.float(), result.dropped


def exact_knn(
    database: torch.Tensor, queries: torch.Tensor, k: int, *, chunk_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact inner-product top-k (collective): ``database`` is this rank's contiguous slice [n_local, D] of the
    database (rank order), ``queries`` this rank's queries [q, D]. Returns similarities [q, k] (best first; ties
    to the lower index) and global database indices [q, k]. Rows are used as given (not re-normalised)."""
    return _exact_knn(queries, database, k, chunk_size=chunk_size, sharded=True)
