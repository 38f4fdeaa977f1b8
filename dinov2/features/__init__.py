"""Features of frozen models for evaluation and data curation: the backbone door, sharded extraction and exact
nearest neighbours.

Backbone (:mod:`dinov2.features.backbone`): :func:`load_backbone` (config + weights, hub name, training output
folder, Hugging Face / timm folder -> :class:`LoadedBackbone`: an eval-mode frozen model and its preprocessing facts).

Extraction (:mod:`dinov2.features.extract`): :func:`extract` (any model output, any dataset, gathered on every rank
or per rank), :func:`iter_outputs` (this rank's batches, streamed), and the released evaluation names
:func:`extract_features` / :func:`extract_features_with_dataloader`.

Tokens (:mod:`dinov2.features.tokens`): :func:`token_stride` (pixels per patch token) and :func:`extra_tokens`
(registers / storage tokens) of a bare model.

Search (:mod:`dinov2.features.knn`): :func:`exact_knn` (top-k by inner product or cosine, chunked, ties to the
lower index, optionally sharded over ranks) and :class:`KnnIndex` (a reusable, optionally labelled database).
"""

from dinov2.features.backbone import LoadedBackbone, autocast_context, eval_device, load_backbone
from dinov2.features.extract import (
    Extracted,
    FeatureBatch,
    IndexedDataset,
    Outputs,
    extract,
    extract_features,
    extract_features_with_dataloader,
    iter_outputs,
    make_shard_loader,
    shard_indices,
)
from dinov2.features.knn import DEFAULT_MAX_BLOCK_ELEMENTS, KnnIndex, exact_knn
from dinov2.features.tokens import ExtraTokens, extra_tokens, token_stride

__all__ = [
    "DEFAULT_MAX_BLOCK_ELEMENTS",
    "Extracted",
    "ExtraTokens",
    "FeatureBatch",
    "IndexedDataset",
    "KnnIndex",
    "LoadedBackbone",
    "Outputs",
    "autocast_context",
    "eval_device",
    "exact_knn",
    "extract",
    "extract_features",
    "extract_features_with_dataloader",
    "extra_tokens",
    "iter_outputs",
    "load_backbone",
    "make_shard_loader",
    "shard_indices",
    "token_stride",
]
