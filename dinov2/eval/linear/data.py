"""Evaluation data of the linear probe: sharded loaders, ImageNet-ReaL collation, class mappings, test settings."""

from __future__ import annotations

import logging
import os

import numpy as np
import torch

from dinov2.data.transforms import make_classification_eval_transform
from dinov2.eval.common import make_eval_dataset
from dinov2.eval.metrics import MetricType
from dinov2.features.extract import make_shard_loader

logger = logging.getLogger("dinov2")

__all__ = ["make_eval_data_loader", "load_class_mapping", "resolve_test_settings", "num_classes_of"]


def _pad_and_collate(batch):
    """Collate ImageNet-ReaL targets (arrays of valid labels of different lengths), padded with -1."""
    length = max(len(np.atleast_1d(target)) for _, target in batch)
    padded = [
        (image, np.pad(np.atleast_1d(t), (0, length - len(np.atleast_1d(t))), constant_values=-1)) for image, t in batch
    ]
    return torch.utils.data.default_collate(padded)


def load_class_mapping(path: str | None):
    """The ``.npy`` class mapping at ``path`` (None for None / "None")."""
    if path is None or path == "None":
        return None
    if not os.path.isfile(path):
        raise FileNotFoundError(f"class mapping file {path!r} does not exist (expected a .npy array of class indices)")
    logger.info("Using class mapping from %s", path)
    return np.load(path)


def resolve_test_settings(val_dataset_str, val_metric_type, test_dataset_strs, test_metric_types, mapping_fpaths):
    """Released defaults: test on the val set with the val metric; one mapping (or None) per test set."""
    tests = list(test_dataset_strs) if test_dataset_strs else [val_dataset_str]
    metrics = list(test_metric_types) if test_metric_types else [val_metric_type] * len(tests)
    mappings = list(mapping_fpaths) if mapping_fpaths else [None]
    if mappings == [None] * len(mappings) and len(mappings) != len(tests):
        mappings = [None] * len(tests)
    for flag, values in (("--test-metric-types", metrics), ("--test-class-mapping-fpaths", mappings)):
        if len(values) != len(tests):
            raise ValueError(f"{flag} has {len(values)} value(s) for {len(tests)} test dataset(s); give one per set")
    return tests, metrics, mappings


def make_eval_data_loader(test_dataset_str, batch_size: int, num_workers: int, metric_type, *, transform=None):
    """Loader of ``(images, targets)`` over this rank's share of a labelled eval dataset (no duplicates).

    Released signature; ``transform`` defaults to the released eval transform (resize 256, centre crop 224).
    """
    transform = transform if transform is not None else make_classification_eval_transform()
    dataset = make_eval_dataset(test_dataset_str, transform, "evaluation")
    collate = _pad_and_collate if MetricType(metric_type) is MetricType.IMAGENET_REAL_ACCURACY else None
    return make_shard_loader(dataset, batch_size, num_workers, collate_fn=collate, with_index=False)


def num_classes_of(dataset, name) -> int:
    """``max(train label) + 1`` from ``dataset.get_targets()``."""
    get_targets = getattr(dataset, "get_targets", None)
    if get_targets is None:
        raise ValueError(f"train dataset {name!r} has no get_targets(): the number of classes cannot be read")
    return int(np.max(np.asarray(get_targets()))) + 1
