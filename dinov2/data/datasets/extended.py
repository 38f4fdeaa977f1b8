"""Base class of the datasets: decode a sample, skip (or refuse) unreadable images."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from torchvision.datasets import VisionDataset

from .decoders import ImageDataDecoder, TargetDecoder

logger = logging.getLogger("dinov2")

__all__ = ["ExtendedVisionDataset", "CorruptImageError"]


class CorruptImageError(RuntimeError):
    """An image file could not be read or decoded (raised in strict mode)."""


class ExtendedVisionDataset(VisionDataset):
    """Dataset of encoded images: subclasses provide ``get_image_data``, ``get_target`` and ``__len__``.

    ``__getitem__`` returns ``(image, target)`` after ``transforms``. When an image cannot be read or
    decoded (corrupt, truncated, not an image, missing):

    - ``strict=False`` (default): the sample is replaced by the next readable one in index order
      (wrapping around), so a given index always yields the same sample; the first failure of each
      file is logged as a warning naming it, and ``skipped_count`` / ``bad_indices`` record them (per
      process: each data-loader worker keeps its own count).
    - ``strict=True``: raises :class:`CorruptImageError` naming the file.
    """

    def __init__(
        self,
        root: str,
        transforms: Callable | None = None,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        *,
        strict: bool = False,
    ) -> None:
        super().__init__(root, transforms, transform, target_transform)
        self.strict = bool(strict)
        self.skipped_count = 0
        self.bad_indices: set[int] = set()

    def get_image_data(self, index: int) -> bytes:
        raise NotImplementedError

    def get_target(self, index: int) -> Any:
        raise NotImplementedError

    def describe_sample(self, index: int) -> str:
        """Where sample ``index`` comes from (a file path), for error messages."""
        return f"sample {index} of {type(self).__name__}(root={self.root!r})"

    def _decode_image(self, index: int):
        return ImageDataDecoder(self.get_image_data(index)).decode()

    def _load_readable(self, index: int) -> tuple[int, Any]:
        """``(index actually used, decoded image)``: ``index`` or the next readable sample after it."""
        count = len(self)
        for attempt in range(count):
            candidate = (index + attempt) % count
            if candidate in self.bad_indices:
                continue
            try:
                return candidate, self._decode_image(candidate)
            except Exception as error:  # any read/decode failure (OSError, UnidentifiedImageError, SyntaxError...)
                where = self.describe_sample(candidate)
                if self.strict:
                    raise CorruptImageError(
                        f"cannot read image {where}: {type(error).__name__}: {error}. "
                        "Remove or replace the file, or use strict=False to skip unreadable images."
                    ) from error
                self.bad_indices.add(candidate)
                self.skipped_count += 1
                logger.warning(
                    "skipping unreadable image %s (%s: %s); using the next readable sample instead "
                    "(%d skipped so far in this process)",
                    where,
                    type(error).__name__,
                    error,
                    self.skipped_count,
                )
        raise CorruptImageError(f"no readable image in {type(self).__name__}(root={self.root!r}) ({count} samples)")

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} samples")
        used_index, image = self._load_readable(index % len(self))
        target = TargetDecoder(self.get_target(used_index)).decode()
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def __len__(self) -> int:
        raise NotImplementedError
