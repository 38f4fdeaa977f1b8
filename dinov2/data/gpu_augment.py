"""Device side of the data path (``train.data_device=cuda``): decode and augment whole batches on the training device.

The loader workers hand over encoded JPEG files and every random choice of the multi-crop augmentation
(``encoded_samples.py``). Here, in the training process:

1. :func:`decode_jpegs` decodes the batch: ``torchvision.io.decode_jpeg(list, device=device)`` (batched nvJPEG on
   CUDA; libjpeg-turbo, the decoder PIL uses, on CPU), or PIL on the CPU when this torchvision no longer has it;
   non-JPEG images arrive decoded.
2. ``batched_resize.resized_crops`` cuts and resizes every crop with batched products that reproduce the CPU path's
   uint8 antialiased bicubic kernel bit for bit.
3. Flip, colour jitter (in each crop's drawn order), grayscale, Gaussian blur, solarize and normalisation run on the
   crops of one size at once with the ``fast_augment`` functions, each on the crops that drew it.
4. The result has the layout of ``collate_data_and_cast`` (crop-major, the trainer's dtype), on the device.

Which crops get which operation is known on the host (the tables come from the workers), so nothing here waits for
the device. On CPU the same code runs on CPU tensors (tests, and ``train.data_device=cuda`` when training on CPU)
and gives the CPU fast path's batch (tested); on CUDA, nvJPEG's decoding differs from libjpeg-turbo's by a few
levels, the rest follows the same arithmetic.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
from PIL import Image

from . import fast_augment as ops
from .augmentations import DataAugmentationDINO
from .batched_resize import resized_crops
from .datasets.extended import CorruptImageError
from .encoded_samples import MASK_KEYS, EncodedCollate, EncodedSampleDataset

logger = logging.getLogger("dinov2")

__all__ = ["DATA_DEVICES", "DeviceAugmentation", "DeviceBatches", "decode_images", "decode_jpegs"]

DATA_DEVICES = ("cpu", "cuda")  # values of train.data_device
_TABLES = ("boxes", "flip", "jitter", "jitter_order", "jitter_factors", "grayscale", "blur", "blur_sigma", "solarize")
_JITTER_OPS = (ops.adjust_brightness, ops.adjust_contrast, ops.adjust_saturation, ops.adjust_hue)


# torchvision >= 0.29 deprecates its image decoders for TorchCodec (not a dependency here): while torchvision still
# ships decode_jpeg (the only batched nvJPEG decoder we have), its deprecation notice is expected and not shown.
_TORCHVISION_DEPRECATION = "The image decoding and encoding capabilities of TorchVision are deprecated"


def _torchvision_decode_jpeg() -> Callable | None:
    """torchvision's ``decode_jpeg`` (lists, any device) or None where this torchvision no longer has it."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:
        return None

    def decode(files: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_TORCHVISION_DEPRECATION, category=DeprecationWarning)
            return decode_jpeg(files, mode=ImageReadMode.RGB, device=device)

    return decode


def _pil_decode_jpeg(files: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """The fallback: PIL (the same libjpeg-turbo) on the CPU, then moved; corrupt files raise ``RuntimeError``."""
    out = []
    for data in files:
        try:
            with Image.open(io.BytesIO(data.numpy().tobytes())) as image:
                pixels = np.asarray(image.convert("RGB"))
        except OSError as error:
            raise RuntimeError(f"PIL cannot decode the JPEG: {error}") from error
        out.append(torch.from_numpy(pixels.copy()).permute(2, 0, 1).to(device))
    return out


def decode_jpegs(files: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """The one place that decodes encoded JPEGs (1-d uint8 CPU tensors) into uint8 ``[3, H, W]`` on ``device``."""
    decode = _torchvision_decode_jpeg() or _pil_decode_jpeg
    return decode(files, device)


def decode_images(
    images: list[torch.Tensor], encoded: list[bool], sources: list[str], device: torch.device
) -> list[torch.Tensor]:
    """uint8 ``[3, H, W]`` images on ``device``: encoded JPEGs decoded there in one batched call, pixels moved."""
    jpeg_indices = [i for i, is_encoded in enumerate(encoded) if is_encoded]
    out = [None if is_encoded else image.to(device, non_blocking=True) for image, is_encoded in zip(images, encoded)]
    if jpeg_indices:
        files = [images[i] for i in jpeg_indices]
        try:
            decoded = decode_jpegs(files, device)
        except RuntimeError as error:
            raise _corrupt_jpeg_error(files, [sources[i] for i in jpeg_indices], device, error) from error
        for index, image in zip(jpeg_indices, decoded):
            out[index] = image
    return out


def _corrupt_jpeg_error(
    files: list[torch.Tensor], sources: list[str], device: torch.device, error: Exception
) -> CorruptImageError:
    """Name the file the batched decode failed on (decoded again one by one on the CPU to find it)."""
    for data, source in zip(files, sources):
        try:
            decode_jpegs([data], torch.device("cpu"))
        except RuntimeError as single:
            return CorruptImageError(
                f"cannot decode JPEG {source} ({single}); remove or replace the file, or train with "
                "train.data_device=cpu, whose workers skip unreadable images when the dataset is not strict"
            )
    return CorruptImageError(f"batched JPEG decoding failed on {device} ({error}) for files {sources}")


def _select(mask: torch.Tensor) -> torch.Tensor:
    """Host-side indices of the True entries of a CPU bool tensor ``[K]``."""
    return mask.nonzero().flatten()


def _to_device_indices(indices: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """Host-side index lists moved to ``device`` in one transfer."""
    flat = torch.cat(indices).to(device, non_blocking=True)
    return list(flat.split([len(i) for i in indices]))


class DeviceAugmentation:
    """Decode and augment an encoded batch (from ``EncodedCollate``) on ``device``.

    Args:
        augmentation: the ``DataAugmentationDINO`` whose ``draw_params`` the workers used (sizes, blur kernel,
            normalisation); its pixel functions are not used.
        device: where decoding and augmentation run (the training device).
        dtype: dtype of the returned crops (the trainer's compute dtype, as ``collate_data_and_cast``'s ``dtype``).

    ``__call__(batch)`` returns the keys of ``collate_data_and_cast`` on ``device``: ``collated_global_crops``
    ``[2B, 3, S, S]`` and ``collated_local_crops`` ``[L*B, 3, s, s]`` (crop-major, ``dtype``) and the masks.
    """

    def __init__(self, augmentation: DataAugmentationDINO, device: torch.device | str, dtype: torch.dtype):
        self.augmentation = augmentation
        self.device = torch.device(device)
        self.dtype = dtype
        scale, shift = ops.normalization_constants(augmentation.mean, augmentation.std)
        self._scale, self._shift = scale.to(self.device), shift.to(self.device)  # once, not per batch
        self.groups = [(2, augmentation.global_crops_size)]
        if augmentation.local_crops_number > 0:
            self.groups.append((augmentation.local_crops_number, augmentation.local_crops_size))
        logger.info("data: JPEG decoding and multi-crop augmentation on %s (workers read files, draw crops)", device)

    # ------------------------------------------------------------------- the worker side's pieces

    def encoded_dataset(self, dataset) -> EncodedSampleDataset:
        """The dataset the loader workers read: ``(EncodedImage, target)`` with this augmentation's draws."""
        return EncodedSampleDataset(dataset, self.augmentation)

    def encoded_collate(self, collate_fn: Callable[[list], dict[str, Any]]) -> EncodedCollate:
        """The workers' collate function around the trainer's ``collate_data_and_cast`` partial."""
        return EncodedCollate(collate_fn)

    def batches(self, loader: Iterable[dict[str, Any]]) -> DeviceBatches:
        """``loader``'s encoded batches, decoded and augmented on the device as they are drawn."""
        return DeviceBatches(loader, self)

    # ------------------------------------------------------------------- pixels

    def _photometric(self, x: torch.Tensor, tables: dict[str, torch.Tensor], crops: slice) -> torch.Tensor:
        """Flip .. solarize + normalise crops ``[K, 3, S, S]`` (float levels, crop-major ``K = n * B``) in place."""
        t = {name: tables[name][crops].flatten(0, 1) for name in tables if name != "boxes"}  # [K, ...]
        steps = [("flip", t["flip"])]
        for position in range(4):  # the jitter's drawn order: op t["jitter_order"][k, position] at that step
            for op in range(4):
                steps.append((f"jitter{op}", t["jitter"] & (t["jitter_order"][:, position] == op)))
        steps += [("grayscale", t["grayscale"]), ("blur", t["blur"]), ("solarize", t["solarize"])]
        indices = [_select(mask) for _, mask in steps]
        values = torch.cat([t["jitter_factors"], t["blur_sigma"][:, None]], dim=1).to(torch.float32)  # [K, 5]
        values = values.to(self.device, non_blocking=True)
        for (name, _), host_index, index in zip(steps, indices, _to_device_indices(indices, self.device)):
            if len(host_index) == 0:  # decided on the host: no device synchronisation
                continue
            crops_in = x.index_select(0, index)
            x.index_copy_(0, index, self._apply(name, crops_in, values.index_select(0, index)))
        return ops.normalize_255(x, self._scale, self._shift)

    def _apply(self, name: str, x: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """One operation on the crops ``x`` ``[k, 3, S, S]`` that drew it; ``values`` ``[k, 5]`` their factors."""
        if name == "flip":
            return ops.hflip(x)
        if name.startswith("jitter"):
            op = int(name[-1])
            return _JITTER_OPS[op](x, values[:, op].view(-1, 1, 1, 1))
        if name == "grayscale":
            return ops.to_grayscale(x)
        if name == "blur":
            return ops.gaussian_blur_batch(x, values[:, 4], self.augmentation.blur_kernel_size)
        return ops.solarize(x.round_(), 128.0)  # on 8-bit levels, as the CPU path

    def decode(self, batch: dict[str, Any]) -> list[torch.Tensor]:
        """The batch's images, uint8 ``[3, H_i, W_i]`` on the device."""
        return decode_images(batch["images"], batch["encoded"], batch["sources"], self.device)

    def augment(self, images: list[torch.Tensor], batch: dict[str, Any]) -> dict[str, Any]:
        """Crops of the decoded ``images`` with the batch's random choices, in ``collate_data_and_cast``'s layout."""
        tables = {name: batch[name] for name in _TABLES}
        resized = resized_crops(images, tables["boxes"], self.groups)  # [n, B, 3, S, S] per crop size
        out, first = [], 0
        for (n, _), crops in zip(self.groups, resized):
            x = self._photometric(crops.flatten(0, 1), tables, slice(first, first + n))
            out.append(x.to(self.dtype))
            first += n
        if len(out) == 1:  # no local crops
            size = self.augmentation.local_crops_size
            out.append(torch.empty((0, 3, size, size), dtype=self.dtype, device=self.device))
        moved = {key: _to_device(batch[key], self.device) for key in MASK_KEYS}
        return {"collated_global_crops": out[0], "collated_local_crops": out[1], **moved}

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        return self.augment(self.decode(batch), batch)


def _to_device(value: Any, device: torch.device) -> Any:
    return value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value


class DeviceBatches:
    """Iterable over a loader of encoded batches that yields them decoded and augmented on the device."""

    def __init__(self, loader: Iterable[dict[str, Any]], augmentation: DeviceAugmentation):
        self.loader = loader
        self.augmentation = augmentation

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self.loader:
            yield self.augmentation(batch)

    def __len__(self) -> int:
        return len(self.loader)  # TypeError for infinite loaders, as the loader's own len
