"""The one place where curation reaches into the evaluation code: backbone set-up, feature extraction, exact k-NN.

Feature extraction and the exact k-NN search are the ones the evaluation protocols use (:mod:`dinov2.features`), and
the backbone is set up as the evaluation scripts do (:mod:`dinov2.eval.setup`); every such import is here.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from dinov2.eval.setup import autocast_context, build_model_for_eval, eval_device, get_autocast_dtype
from dinov2.eval.utils import ModelWithNormalize
from dinov2.features import exact_knn as _exact_knn
from dinov2.features import extract_features
from dinov2.utils.config import load_cfg

__all__ = ["build_backbone", "default_device", "extract_normalised", "exact_knn"]


def default_device() -> torch.device:
    """This process's GPU when CUDA is available, else the CPU (as the evaluation scripts choose)."""
    return eval_device()


def build_backbone(
    config_file: str, pretrained_weights: str | os.PathLike, opts: list[str] | None = None, device=None
) -> tuple[nn.Module, torch.dtype]:
    """The teacher backbone of a training / eval config with ``pretrained_weights`` loaded strictly (frozen,
    eval mode) and the config's autocast dtype. Any backbone the evaluation scripts accept works here."""
    config = load_cfg(config_file, opts=list(opts or []))
    model = build_model_for_eval(config, pretrained_weights, device=device)
    return model, get_autocast_dtype(config)


@torch.no_grad()
def extract_normalised(
    model: nn.Module, dataset, *, batch_size: int, num_workers: int, autocast_dtype: torch.dtype, progress: bool = True
) -> torch.Tensor:
    """L2-normalised ``model(images)`` of every sample of ``dataset`` in order, float32 [N, D] on the CPU, on every
    rank (collective: the ranks share the images and exchange the features)."""
    device = next(model.parameters()).device
    normalised = ModelWithNormalize(model).eval()
    with autocast_context(autocast_dtype, device)():
        features, _ = extract_features(
            normalised, dataset, batch_size, num_workers, True, progress=progress, description="embeddings"
        )  # gathered on the CPU
    return features.float()


def exact_knn(
    database: torch.Tensor, queries: torch.Tensor, k: int, *, chunk_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact inner-product top-k (collective): ``database`` is this rank's contiguous slice [n_local, D] of the
    database (rank order), ``queries`` this rank's queries [q, D]. Returns similarities [q, k] (best first; ties
    to the lower index) and global database indices [q, k]. Rows are used as given (not re-normalised)."""
    return _exact_knn(queries, database, k, chunk_size=chunk_size, sharded=True)
