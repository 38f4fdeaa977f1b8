"""Dataset adapters."""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

__all__ = ["DatasetWithEnumeratedTargets"]


class DatasetWithEnumeratedTargets(Dataset):
    """Yields ``(image, (index, target))``; a ``None`` target (e.g. ImageNet TEST) becomes the index."""

    def __init__(self, dataset):
        self._dataset = dataset

    def get_image_data(self, index: int) -> bytes:
        return self._dataset.get_image_data(index)

    def get_target(self, index: int) -> tuple[int, Any]:
        return (index, self._dataset.get_target(index))

    def __getitem__(self, index: int) -> tuple[Any, tuple[int, Any]]:
        image, target = self._dataset[index]
        return image, (index, index if target is None else target)

    def __len__(self) -> int:
        return len(self._dataset)
