"""Base class of the datasets: decode a sample; substitute, refuse or drop unreadable images."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

from torchvision.datasets import VisionDataset

from .decoders import ImageDataDecoder, TargetDecoder

logger = logging.getLogger("dinov2")

__all__ = [
    "ExtendedVisionDataset",
    "CorruptImageError",
    "Unreadable",
    "UNREADABLE_POLICIES",
    "unreadable_policy",
    "set_unreadable_policy",
    "describe_sample",
    "UnreadableImagesError",
    "refuse_unreadable",
]

#: What a dataset does with an image it cannot read: use the next readable sample (training), raise, or return an
#: :class:`Unreadable` marker in place of the sample (feature extraction leaves it out and reports it).
UNREADABLE_POLICIES = ("substitute", "raise", "drop")


class CorruptImageError(RuntimeError):
    """An image file could not be read or decoded (raised in strict mode)."""


class UnreadableImagesError(RuntimeError):
    """A dataset to evaluate or embed strictly has unreadable images (results on the rest would differ silently)."""


class Unreadable(NamedTuple):
    """The image of a dropped sample (``on_unreadable="drop"``): its index, where it comes from and why."""

    index: int
    where: str
    error: str


class ExtendedVisionDataset(VisionDataset):
    """Dataset of encoded images: subclasses provide ``get_image_data``, ``get_target`` and ``__len__``.

    ``__getitem__`` returns ``(image, target)`` after ``transforms``. When an image cannot be read or
    decoded (corrupt, truncated, not an image, missing):

    - ``strict=False`` (default): the sample is replaced by the next readable one in index order
      (wrapping around), so a given index always yields the same sample; the first failure of each
      file is logged as a warning naming it, and ``skipped_count`` / ``bad_indices`` record them (per
      process: each data-loader worker keeps its own count).
    - ``strict=True``: raises :class:`CorruptImageError` naming the file.

    ``on_unreadable`` (argument and attribute) says the same with one of :data:`UNREADABLE_POLICIES`:
    ``"substitute"`` (``strict=False``), ``"raise"`` (``strict=True``) or ``"drop"``: ``dataset[i]`` is then
    ``(Unreadable(i, where, error), None)`` and feature extraction leaves the sample out (and reports it).

    The dataset classes take their own keyword arguments (``root``, ``split``...) and pass these dataset options
    (``transforms``, ``transform``, ``target_transform``, ``strict``, ``on_unreadable``) on as ``**options``.
    """

    def __init__(
        self,
        root: str,
        transforms: Callable | None = None,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        *,
        strict: bool = False,
        on_unreadable: str | None = None,
    ) -> None:
        super().__init__(root, transforms, transform, target_transform)
        if on_unreadable is not None and strict and on_unreadable != "raise":
            raise ValueError(f"strict=True means on_unreadable='raise', got on_unreadable={on_unreadable!r}")
        self.on_unreadable = on_unreadable or ("raise" if strict else "substitute")
        self.skipped_count = 0
        self.bad_indices: set[int] = set()

    @property
    def on_unreadable(self) -> str:
        return self._on_unreadable

    @on_unreadable.setter
    def on_unreadable(self, value: str) -> None:
        if value not in UNREADABLE_POLICIES:
            raise ValueError(f"on_unreadable must be one of {', '.join(UNREADABLE_POLICIES)}; got {value!r}")
        self._on_unreadable = value

    @property
    def strict(self) -> bool:
        """Released flag: ``True`` when unreadable images raise (``on_unreadable == "raise"``)."""
        return self.on_unreadable == "raise"

    @strict.setter
    def strict(self, value: bool) -> None:
        self.on_unreadable = "raise" if value else "substitute"

    def get_image_data(self, index: int) -> bytes:
        raise NotImplementedError

    def get_target(self, index: int) -> Any:
        raise NotImplementedError

    def describe_sample(self, index: int) -> str:
        """Where sample ``index`` comes from (a file path), for error messages."""
        return f"sample {index} of {type(self).__name__}(root={self.root!r})"

    def _decode_image(self, index: int):
        return ImageDataDecoder(self.get_image_data(index)).decode()

    def _record_unreadable(self, index: int, error: Exception) -> str:
        """The one decision on an unreadable image: raise (``"raise"``) or record it; returns where it is."""
        where = self.describe_sample(index)
        if self.on_unreadable == "raise":
            raise CorruptImageError(
                f"cannot read image {where}: {type(error).__name__}: {error}. "
                "Remove or replace the file, or use strict=False to skip unreadable images."
            ) from error
        self.bad_indices.add(index)
        self.skipped_count += 1
        action = "leaving it out" if self.on_unreadable == "drop" else "using the next readable sample instead"
        logger.warning(
            "skipping unreadable image %s (%s: %s); %s (%d skipped so far in this process)",
            where,
            type(error).__name__,
            error,
            action,
            self.skipped_count,
        )
        return where

    def _load_readable(self, index: int) -> tuple[int, Any]:
        """``(index actually used, decoded image)``: ``index`` or the next readable sample after it; when
        dropping, ``(index, Unreadable(...))`` for an unreadable ``index``."""
        if self.on_unreadable == "drop":
            try:
                return index, self._decode_image(index)
            except Exception as error:  # any read/decode failure, as below
                where = self._record_unreadable(index, error)
                return index, Unreadable(index, where, f"{type(error).__name__}: {error}")
        count = len(self)
        for attempt in range(count):
            candidate = (index + attempt) % count
            if candidate in self.bad_indices:
                continue
            try:
                return candidate, self._decode_image(candidate)
            except Exception as error:  # any read/decode failure (OSError, UnidentifiedImageError, SyntaxError...)
                self._record_unreadable(candidate, error)
        raise CorruptImageError(f"no readable image in {type(self).__name__}(root={self.root!r}) ({count} samples)")

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} samples")
        used_index, image = self._load_readable(index % len(self))
        if isinstance(image, Unreadable):
            return image, None
        target = TargetDecoder(self.get_target(used_index)).decode()
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def __len__(self) -> int:
        raise NotImplementedError


def _policy_holder(dataset) -> ExtendedVisionDataset | None:
    """The :class:`ExtendedVisionDataset` under ``dataset``'s wrappers (``Subset``, ...: ``.dataset`` chains)."""
    for _ in range(16):
        if isinstance(dataset, ExtendedVisionDataset):
            return dataset
        dataset = getattr(dataset, "dataset", None)
    return None


def describe_sample(dataset, index: int) -> str:
    """Where sample ``index`` of ``dataset`` comes from, through ``Subset`` and other ``.dataset`` wrappers."""
    for _ in range(16):
        if hasattr(dataset, "describe_sample"):
            return str(dataset.describe_sample(index))
        if hasattr(dataset, "indices") and hasattr(dataset, "dataset"):  # torch.utils.data.Subset
            index = int(dataset.indices[index])
        dataset = getattr(dataset, "dataset", None)
        if dataset is None:
            break
    return f"sample {index}"


def set_unreadable_policy(dataset, policy: str) -> str | None:
    """Set ``on_unreadable`` of the :class:`ExtendedVisionDataset` under ``dataset``'s wrappers to ``policy``;
    returns the previous policy (None, changing nothing, for other datasets)."""
    holder = _policy_holder(dataset)
    if holder is None:
        return None
    previous, holder.on_unreadable = holder.on_unreadable, policy
    return previous


@contextlib.contextmanager
def unreadable_policy(dataset, policy: str) -> Iterator[None]:
    """Within the block, the :class:`ExtendedVisionDataset` under ``dataset``'s wrappers treats unreadable images
    following ``policy`` (one of :data:`UNREADABLE_POLICIES`); other datasets are left alone."""
    previous = set_unreadable_policy(dataset, policy)
    try:
        yield
    finally:
        if previous is not None:
            set_unreadable_policy(dataset, previous)


_EVAL_FIX = "results without them would differ silently: remove or replace these files"


def refuse_unreadable(
    dataset, dropped: Sequence[int], description: str = "features", *, fix: str = _EVAL_FIX, shown: int = 10
) -> None:
    """Raise :class:`UnreadableImagesError` naming the samples ``dropped`` (dataset indices) of ``dataset``;
    ``fix`` says what to do."""
    if not len(dropped):
        return
    names = [describe_sample(dataset, int(i)) for i in dropped[:shown]]
    more = f" and {len(dropped) - shown} more" if len(dropped) > shown else ""
    raise UnreadableImagesError(
        f"cannot extract {description}: {len(dropped)} of {len(dataset)} images are unreadable "
        f"({', '.join(names)}{more}); {fix}"
    )
