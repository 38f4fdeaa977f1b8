"""k-NN classification of frozen features (SPEC.md §6), sharded over ranks: the protocol the k-NN evaluation
(:mod:`dinov2.eval.knn`) and the online k-NN monitor of training (:mod:`dinov2.train.knn_monitor`) share.

Protocol (released ``dinov2/eval/knn.py``): features are L2-normalised; for each query the
``max(nb_knn)`` most similar train features (cosine similarity) are found; their similarities are
turned into weights ``softmax(sims / T)`` over those ``max(nb_knn)`` neighbours, and the class score
for a given k sums the weights of the first k neighbours per class. Top-1 / top-5 accuracy per k.

The search itself (:class:`~dinov2.features.knn.KnnIndex`: train set sharded over ranks, exact top-k with
deterministic tie-breaking by train index) lives in :mod:`dinov2.features.knn`, shared with data curation.
:func:`knn_eval_of_model` runs the whole protocol for a model and two labelled datasets.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

from dinov2.features.backbone import autocast_context
from dinov2.features.extract import extract_features
from dinov2.features.knn import KnnIndex, check_k
from dinov2.features.metrics import MetricType, build_metric

logger = logging.getLogger("dinov2")

__all__ = [
    "DEFAULT_NB_KNN",
    "DEFAULT_TEMPERATURE",
    "RESIZE_RATIO",
    "ModelWithNormalize",
    "knn_class_scores",
    "sample_few_shot_indices",
    "few_shot_k_list",
    "eval_knn",
    "knn_eval_of_model",
    "top1_by_k",
    "released_knn_results",
]

RESIZE_RATIO = 256 / 224  # released eval transform: resize 256, crop 224
DEFAULT_NB_KNN = (10, 20, 100, 200)
DEFAULT_TEMPERATURE = 0.07


def knn_class_scores(
    topk_sims: torch.Tensor, topk_labels: torch.Tensor, nb_knn: Sequence[int], temperature: float, num_classes: int
) -> dict[int, torch.Tensor]:
    """Class scores per k from the sorted top-max_k neighbours.

    topk_sims, topk_labels: [Q, max_k]. Weights are ``softmax(sims / T)`` over all max_k neighbours
    (not renormalised per k, as released); score[c] = sum of the weights of the first k neighbours
    with label c. Returns {k: [Q, num_classes] float32}.
    """
    max_k = topk_sims.shape[1]
    if any(k > max_k or k < 1 for k in nb_knn):
        raise ValueError(f"every k in {list(nb_knn)} must be in [1, {max_k}] (the number of neighbours found)")
    weights = torch.softmax(topk_sims.float() / temperature, dim=1)  # [Q, max_k]
    scores = weights.new_zeros(topk_sims.shape[0], num_classes)  # [Q, C]
    by_k, done = {}, 0
    for k in sorted(set(nb_knn)):
        scores = scores.scatter_add(1, topk_labels[:, done:k], weights[:, done:k])
        by_k[k], done = scores, k
    return {k: by_k[k] for k in nb_knn}


def sample_few_shot_indices(labels: torch.Tensor, n_per_class: int, seed: int) -> torch.Tensor:
    """Indices of ``n_per_class`` random samples of every class (all of a class's samples if fewer).

    Same draw as the released ``filter_train``: a generator seeded with ``seed``, one
    ``randperm(len(class))`` per class in increasing class order. Returned sorted (train order).
    """
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1 (or -1 for the full train set), got {n_per_class}")
    labels = labels.cpu()
    generator = torch.Generator().manual_seed(seed)
    order = torch.sort(labels, stable=True).indices  # class by class, train order inside a class
    counts = torch.unique(labels, return_counts=True)[1].tolist()
    picks = [idx[torch.randperm(len(idx), generator=generator)[:n_per_class]] for idx in order.split(counts)]
    return torch.cat(picks).sort().values


def few_shot_k_list(nb_knn: Sequence[int], n_per_class: int) -> list[int]:
    """The k values used with ``n_per_class`` samples per class (released rule: k <= n, plus k = n)."""
    return sorted({k for k in nb_knn if k <= n_per_class} | {n_per_class})


def _check_labels(labels: torch.Tensor, what: str) -> None:
    if labels is None or labels.numel() == 0:
        raise ValueError(f"{what} labels are missing; k-NN evaluation needs a labelled {what} split")
    if labels.ndim != 1 or labels.dtype.is_floating_point or bool((labels < 0).any()):
        raise ValueError(
            f"{what} labels must be a 1-D tensor of class indices >= 0 (got dtype {labels.dtype}, shape "
            f"{tuple(labels.shape)}, min {labels.min().item()}); -1 means the split has no labels: use a labelled split"
        )


def _evaluate_one(index, val_features, val_labels, k_list, temperature, num_classes, metric_type, chunk=4096):
    """Search, vote and score this rank's queries (chunk of queries voted at a time); accuracies in %."""
    sims, _, neighbour_labels = index.search(val_features, max(k_list))  # [Q_local, max_k]
    metrics = {k: build_metric(metric_type, num_classes=num_classes) for k in k_list}
    for start in range(0, max(1, sims.shape[0]), chunk):
        stop = start + chunk
        scores = knn_class_scores(sims[start:stop], neighbour_labels[start:stop], k_list, temperature, num_classes)
        for k in k_list:
            metrics[k].update(scores[k], val_labels[start:stop].to(scores[k].device))
    return {k: {name: 100.0 * value for name, value in metrics[k].compute().items()} for k in k_list}


def eval_knn(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    val_features: torch.Tensor,
    val_labels: torch.Tensor,
    *,
    nb_knn: Sequence[int] = DEFAULT_NB_KNN,
    temperature: float = DEFAULT_TEMPERATURE,
    n_per_class_list: Sequence[int] = (-1,),
    n_tries: int = 1,
    metric_type: MetricType | str = MetricType.MEAN_ACCURACY,
    num_classes: int | None = None,
    device: torch.device | str | None = None,
    chunk_size: int | None = None,
    normalize: bool = True,
) -> dict[str, dict]:
    """k-NN evaluation of features (collective when distributed).

    train_features [N, D], train_labels [N]: the full train set on every rank (as released; each rank
    keeps its shard). val_features [Q_local, D], val_labels [Q_local]: this rank's queries.
    ``n_per_class_list``: -1 = full train set (one try); n > 0 = n samples per class, ``n_tries``
    draws (seeds 0..n_tries-1), with the k values of :func:`few_shot_k_list`.

    Returns ``{setting: {"mean": {k: {"top-1": %, "top-5": %}}, "tries": [{k: {...}}, ...]}}`` with
    settings ``"full"`` and ``"{n} per class"``; accuracies in percent (every rank gets them).
    """
    _check_labels(train_labels, "train")
    _check_labels(val_labels, "val")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not nb_knn or min(nb_knn) < 1:
        raise ValueError(f"--nb_knn values must be >= 1, got {list(nb_knn)}")
    num_classes = int(train_labels.max()) + 1 if num_classes is None else int(num_classes)
    results: dict[str, dict] = {}
    for setting, k_list, train_sets in _train_sets(train_features, train_labels, nb_knn, n_per_class_list, n_tries):
        tries = []
        for t, (features, labels) in enumerate(train_sets):
            index = KnnIndex.from_full(features, labels, device=device, normalize=normalize, chunk_size=chunk_size)
            logger.info("k-NN %s, try %d: %d train samples, k in %s", setting, t, index.num_total, k_list)
            tries.append(_evaluate_one(index, val_features, val_labels, k_list, temperature, num_classes, metric_type))
        mean = {k: {m: torch.stack([tr[k][m] for tr in tries]).mean(dim=0) for m in tries[0][k]} for k in k_list}
        results[setting] = {"mean": mean, "tries": tries}
    return results


def _train_sets(train_features, train_labels, nb_knn, n_per_class_list, n_tries):
    """Yield (setting name, k values, lazy iterable of (features, labels) per try) for each n per class."""

    def draws(n_per_class, setting, k_list):
        for t in range(n_tries):
            subset = sample_few_shot_indices(train_labels, n_per_class, seed=t).to(train_labels.device)
            if max(k_list) > len(subset):
                raise ValueError(
                    f"k={max(k_list)} is larger than the {len(subset)} train samples drawn for '{setting}' "
                    "(some classes have fewer samples than requested); lower --n-per-class-list"
                )
            yield train_features[subset], train_labels[subset]

    for n_per_class in n_per_class_list:
        if n_per_class < 0:
            yield "full", sorted(set(nb_knn)), [(train_features, train_labels)]
        else:
            setting, k_list = f"{n_per_class} per class", few_shot_k_list(nb_knn, n_per_class)
            yield setting, k_list, draws(n_per_class, setting, k_list)


def released_knn_results(results: dict[str, dict]) -> dict[str, float | list[float]]:
    """Flatten :func:`eval_knn` results to the released JSON keys, e.g. ``"('full', 10) Top 1": 78.2``.

    Per-class accuracies (a vector per k) become lists (NaN for classes without validation images).
    """
    flat = {}
    for setting, entry in results.items():
        for k, values in entry["mean"].items():
            for name, value in values.items():
                flat[f"{(setting, k)} Top {name.split('-')[1]}"] = float(value) if value.ndim == 0 else value.tolist()
    return flat


class ModelWithNormalize(nn.Module):
    """``model(images)`` L2-normalised along the feature dimension: [B, D] unit vectors (the k-NN input)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, samples: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.model(samples), dim=1, p=2)


def knn_eval_of_model(
    model: nn.Module,
    train_dataset,
    val_dataset,
    *,
    nb_knn: Sequence[int] = DEFAULT_NB_KNN,
    temperature: float = DEFAULT_TEMPERATURE,
    autocast_dtype: torch.dtype = torch.float,
    metric_type: MetricType | str = MetricType.MEAN_ACCURACY,
    gather_on_cpu: bool = False,
    batch_size: int = 256,
    num_workers: int = 5,
    n_per_class_list: Sequence[int] = (-1,),
    n_tries: int = 1,
    progress: bool = True,
    check_labels=None,
) -> dict[str, dict]:
    """k-NN evaluation of ``model`` (``model(images) -> [B, D]``) on two labelled datasets of transformed images
    (collective): L2-normalised features of both (train gathered on every rank, val kept per rank), then
    :func:`eval_knn`. ``check_labels(labels, which)`` (which: ``"train"`` / ``"val"``) may reject extracted labels
    with a message naming the dataset. Returns :func:`eval_knn`'s structured results. A k larger than the train set
    is refused before any image is read.
    """
    check_k(nb_knn, len(train_dataset))
    device = next(model.parameters()).device
    normalized = ModelWithNormalize(model).eval()
    with autocast_context(autocast_dtype, device)():
        train_features, train_labels = extract_features(
            normalized, train_dataset, batch_size, num_workers, gather_on_cpu, progress=progress, description="train"
        )
        if check_labels is not None:
            check_labels(train_labels, "train")
        val_features, val_labels = extract_features(
            normalized, val_dataset, batch_size, num_workers, gather=False, progress=progress, description="val"
        )
    if check_labels is not None:
        check_labels(val_labels, "val")
    protocol = dict(nb_knn=nb_knn, temperature=temperature, n_per_class_list=n_per_class_list, n_tries=n_tries)
    return eval_knn(
        train_features,
        train_labels,
        val_features,
        val_labels,
        metric_type=metric_type,
        device=device,
        normalize=False,
        **protocol,
    )


def top1_by_k(results: dict[str, dict], setting: str = "full") -> dict[int, float]:
    """``{k: top-1 accuracy (percent, mean over tries)}`` of one setting of :func:`eval_knn` results."""
    return {int(k): float(values["top-1"]) for k, values in results[setting]["mean"].items()}
