"""Worker side of the device data path: read the file bytes, draw every random choice, collate without pixels.

With ``train.data_device=cuda`` the loader workers do not decode images. For each sample they read the encoded
file, read its size from the header (PIL parses only the header), and draw the multi-crop parameters with
``DataAugmentationDINO.draw_params``: the same torch RNG calls, in the same order, as the CPU path, under the same
per-sample seeding (``seeding.py``). The same seed therefore gives the same crops, flips, jitters, blurs and
solarizations on both paths, and resume stays exact. The collate function stacks the parameters into crop-major
tables and draws the iBOT masks with the trainer's own ``collate_data_and_cast`` (called on zero-size crops, so its
random calls are exactly the CPU path's). ``gpu_augment.py`` decodes and augments the batch on the device.

JPEG files in RGB or grey travel encoded (decoded later by ``gpu_augment.decode_jpegs``, which decodes them as PIL
does); other files (PNG, CMYK JPEG, ...) are decoded here with the CPU path's decoder and travel as pixels.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from . import fast_augment as ops
from .augmentations import CropParams, DataAugmentationDINO
from .datasets.decoders import ImageDataDecoder
from .datasets.extended import CorruptImageError

logger = logging.getLogger("dinov2")

__all__ = ["EncodedImage", "EncodedSampleDataset", "EncodedCollate", "MASK_KEYS"]

MASK_KEYS = ("collated_masks", "mask_indices_list", "masks_weight", "upperbound", "n_masked_patches")
_DEVICE_DECODED_MODES = ("RGB", "L")  # JPEG modes that decode_jpeg(mode=RGB) converts exactly as PIL's convert("RGB")
_JITTER_NEUTRAL = (1.0, 1.0, 1.0, 0.0)  # brightness, contrast, saturation, hue factors of an unjittered crop


@dataclass
class EncodedImage:
    """One sample as the workers hand it over: image data, its size and the random choices of all its crops."""

    data: torch.Tensor  # uint8 [n_bytes] JPEG file (encoded) or uint8 [3, H, W] pixels
    encoded: bool
    height: int
    width: int
    params: list[CropParams]  # in DataAugmentationDINO.crop_kinds order
    source: str  # where the image comes from (a path), for error messages


def _read_image(data: bytes) -> tuple[torch.Tensor, bool, int, int]:
    """``(data, encoded, height, width)``: RGB / grey JPEG bytes as they are, other formats decoded to pixels."""
    with Image.open(BytesIO(data)) as image:  # reads the header only
        width, height = image.size
        if image.format == "JPEG" and image.mode in _DEVICE_DECODED_MODES:
            return torch.frombuffer(bytearray(data), dtype=torch.uint8), True, height, width
    pixels = ops.to_uint8_chw(ImageDataDecoder(data).decode())  # [3, H, W]
    return pixels, False, pixels.shape[-2], pixels.shape[-1]


class EncodedSampleDataset(Dataset):
    """Wraps an image dataset (with ``get_image_data`` / ``get_target``, e.g. ``ImageFolder``, ``ImageNet``):
    ``dataset[i]`` is ``(EncodedImage, target)``, with ``augmentation``'s random choices for that image.

    Unreadable files (no image header) are skipped or raise following the dataset's ``strict`` flag, as the CPU
    path does (see ``ExtendedVisionDataset``); ``target_transform`` of the dataset applies to the target.
    """

    def __init__(self, dataset, augmentation: DataAugmentationDINO):
        for name in ("get_image_data", "get_target"):
            if not callable(getattr(dataset, name, None)):
                raise TypeError(
                    f"the device data path reads encoded images, but {type(dataset).__name__} has no {name}(); "
                    "use an ExtendedVisionDataset (ImageNet, ImageFolder, ...) or train.data_device=cpu"
                )
        self.dataset = dataset
        self.augmentation = augmentation

    def __len__(self) -> int:
        return len(self.dataset)

    def _describe(self, index: int) -> str:
        describe = getattr(self.dataset, "describe_sample", None)
        return describe(index) if describe is not None else f"sample {index} of {type(self.dataset).__name__}"

    def _skip(self, index: int, error: Exception) -> None:
        where = self._describe(index)
        if getattr(self.dataset, "strict", False):
            raise CorruptImageError(
                f"cannot read image {where}: {type(error).__name__}: {error}. "
                "Remove or replace the file, or use strict=False to skip unreadable images."
            ) from error
        bad = getattr(self.dataset, "bad_indices", None)
        if bad is not None:
            bad.add(index)
            self.dataset.skipped_count += 1
        logger.warning(
            "skipping unreadable image %s (%s: %s); using the next readable sample", where, type(error).__name__, error
        )

    def _read_readable(self, index: int) -> tuple[int, tuple[torch.Tensor, bool, int, int]]:
        """``(index used, image)``: ``index`` or the next readable sample after it (the CPU path's order)."""
        count = len(self.dataset)
        bad = getattr(self.dataset, "bad_indices", set())
        for attempt in range(count):
            candidate = (index + attempt) % count
            if candidate in bad:
                continue
            try:
                return candidate, _read_image(self.dataset.get_image_data(candidate))
            except Exception as error:  # any read failure, as in ExtendedVisionDataset (OSError, SyntaxError, ...)
                self._skip(candidate, error)
        raise CorruptImageError(f"no readable image in {type(self.dataset).__name__} ({count} samples)")

    def __getitem__(self, index: int) -> tuple[EncodedImage, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} samples")
        used, (data, encoded, height, width) = self._read_readable(index % len(self))
        params = self.augmentation.draw_params(height, width)  # the CPU path's calls, after its (RNG-free) decode
        target = self.dataset.get_target(used)
        target_transform = getattr(self.dataset, "target_transform", None)
        if target_transform is not None:
            target = target_transform(target)
        return EncodedImage(data, encoded, height, width, params, self._describe(used)), target


def _params_tables(samples: list[EncodedImage]) -> dict[str, torch.Tensor]:
    """Crop-major tables ``[n_crops, B, ...]`` of the random choices (boxes image-major ``[B, n_crops, 4]``)."""
    per_crop = list(zip(*(sample.params for sample in samples)))  # n_crops tuples of B CropParams
    boxes = [[(p.top, p.left, p.height, p.width) for p in sample.params] for sample in samples]
    return {
        "boxes": torch.tensor(boxes, dtype=torch.int64),
        "flip": torch.tensor([[p.flip for p in crops] for crops in per_crop]),
        "jitter": torch.tensor([[p.jitter_order is not None for p in crops] for crops in per_crop]),
        "jitter_order": torch.tensor([[p.jitter_order or (0, 1, 2, 3) for p in crops] for crops in per_crop]),
        "jitter_factors": torch.tensor(
            [[_jitter_factors(p) for p in crops] for crops in per_crop], dtype=torch.float64
        ),
        "grayscale": torch.tensor([[p.grayscale for p in crops] for crops in per_crop]),
        "blur": torch.tensor([[p.blur_sigma is not None for p in crops] for crops in per_crop]),
        "blur_sigma": torch.tensor([[p.blur_sigma or 0.0 for p in crops] for crops in per_crop], dtype=torch.float64),
        "solarize": torch.tensor([[p.solarize for p in crops] for crops in per_crop]),
    }


def _jitter_factors(params: CropParams) -> tuple[float, float, float, float]:
    factors = (params.brightness, params.contrast, params.saturation, params.hue)
    if params.jitter_order is not None and None in factors:
        raise ValueError("the device data path needs all four colour-jitter factors (brightness, contrast, ...)")
    return _JITTER_NEUTRAL if params.jitter_order is None else factors


class EncodedCollate:
    """Collates ``(EncodedImage, target)`` samples into one dict: image data, parameter tables and iBOT masks.

    ``collate_fn`` is the trainer's ``collate_data_and_cast`` partial; it runs on zero-size crops so that the masks
    (keys ``MASK_KEYS``) come from exactly the CPU path's random calls.
    """

    def __init__(self, collate_fn: Callable[[list], dict[str, Any]]):
        self.collate_fn = collate_fn

    def __call__(self, batch: list[tuple[EncodedImage, Any]]) -> dict[str, Any]:
        samples = [sample for sample, _ in batch]
        if not samples:
            raise ValueError("EncodedCollate got an empty batch")
        n_local = len(samples[0].params) - 2
        empty = torch.empty((3, 0, 0))
        placeholders = [({"global_crops": [empty, empty], "local_crops": [empty] * n_local}, ()) for _ in samples]
        masks = self.collate_fn(placeholders)
        return {
            "images": [sample.data for sample in samples],
            "encoded": [sample.encoded for sample in samples],
            "sources": [sample.source for sample in samples],
            **_params_tables(samples),
            **{key: masks[key] for key in MASK_KEYS},
        }
