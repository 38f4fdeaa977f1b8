"""Config checks against the data registries: ``train.data_device`` (``DATA_DEVICES``) and the dataset names of
``train.dataset_path`` and ``tracking.knn.*_dataset`` (the dataset-string table), registered with
:func:`dinov2.config.register_check` on import."""

from __future__ import annotations

from dinov2.config.checks import Checker, register_check
from dinov2.data.dataset_strings import known_datasets
from dinov2.data.gpu_augment import DATA_DEVICES

# Only the name is checked here: the keys may name files that exist only where the job runs (and the released
# default, ImageNet:split=TRAIN, gets its root and extra from the user later).
DATASET_KEYS = ("train.dataset_path", "tracking.knn.train_dataset", "tracking.knn.val_dataset")


def check_data(c: Checker) -> None:
    """``train.data_device``: where the multi-crop augmentation runs; dataset strings: a registered name."""
    c.choice("train.data_device", list(DATA_DEVICES))
    for key in DATASET_KEYS:
        # The table is read at call time: datasets may be registered after import.
        c.check(
            key,
            lambda v: not isinstance(v, str) or v == "" or v.split(":", 1)[0] in known_datasets(),
            f"a dataset string Name:key=value:... with Name one of {known_datasets()}",
        )


register_check(__name__, check_data)
