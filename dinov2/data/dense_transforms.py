"""Joint image + target transforms for dense prediction (the released mmseg / depth-toolbox pipelines).

Every transform is called as ``image, target = t(image, target)``: ``image`` an RGB ``PIL.Image`` or an
``np.ndarray [H, W, 3]`` (uint8, or float after :class:`ColorAug`), ``target`` an ``np.ndarray [H, W]`` (class
indices, or depth in metres). Geometric transforms move both alike (image bilinear, target nearest);
photometric ones touch the image only. Randomness comes from NumPy's global generator, which the data loader
seeds per sample (``dinov2.data.seeding``), so augmentations are reproducible and resumable.

Released pipelines (``make_*_train_transform`` defaults):

- segmentation (mmseg 0.27 configs): keep-ratio resize to short side ``512 x U(0.5, 2.0)`` (640 x U(1, 3) for
  +ms), random crop 512 (``cat_max_ratio`` 0.75), flip 0.5, photometric distortion, normalise, pad to the crop
  (image 0, label 255);
- depth (NYU configs): NYU crop ``[45:472, 43:608]``, rotate +-2.5 deg with p 0.5, flip 0.5, random crop 416 x 544,
  colour augmentation (p 0.5: gamma 0.9-1.1, brightness 0.75-1.25, colour 0.9-1.1), normalise.

Differences from OpenCV-based mmcv: resizing uses ``torch`` bilinear / nearest sampling (the same sample
positions, rounded to uint8 as OpenCV does, without its fixed-point arithmetic); HSV changes go through PIL's
HSV (hue in 256 steps instead of OpenCV's 180); rotation uses torchvision (counter-clockwise for positive
angles; the range is symmetric, so the distribution is the same).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

from dinov2.utils.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

__all__ = [
    "Compose", "ToArrays", "Resize", "RandomCrop", "RandomFlip", "RandomRotate", "PhotoMetricDistortion",
    "ColorAug", "NYUCrop", "ToTensor", "Pad", "make_segmentation_train_transform", "make_depth_train_transform",
    "make_dense_eval_transform",
]  # fmt: skip

IMAGENET_MEAN, IMAGENET_STD = IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD


def keep_ratio_size(height: int, width: int, short_side: int, long_side: int = 99999999) -> tuple[int, int]:
    """``(new_h, new_w)`` as mmcv ``imrescale(img, (long_side, short_side))``: the largest factor that keeps the
    short side <= ``short_side`` and the long side <= ``long_side``; sides rounded half up."""
    factor = min(long_side / max(height, width), short_side / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def _pair(value) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    first, second = value
    return int(first), int(second)


class Compose:
    def __init__(self, transforms: Sequence[Callable]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image, target):
        for transform in self.transforms:
            image, target = transform(image, target)
        return image, target

    def __repr__(self) -> str:
        return f"Compose({self.transforms})"


class ToArrays:
    """PIL image -> ``np.uint8 [H, W, 3]``; target -> ``np.ndarray`` (a copy)."""

    def __call__(self, image, target):
        if isinstance(image, Image.Image):
            image = np.asarray(image.convert("RGB"), dtype=np.uint8)
        return np.array(image), np.array(target)


def _resize_array(array: np.ndarray, size: tuple[int, int], nearest: bool) -> np.ndarray:
    """Resize ``[H, W]`` or ``[H, W, C]`` to ``size`` (h, w): nearest (OpenCV ``INTER_NEAREST`` positions) or
    bilinear (half-pixel centres, no antialias, as OpenCV ``INTER_LINEAR``)."""
    if tuple(array.shape[:2]) == tuple(size):
        return array
    tensor = torch.from_numpy(np.ascontiguousarray(array)).float()
    tensor = tensor[None, None] if array.ndim == 2 else tensor.permute(2, 0, 1)[None]
    if nearest:
        out = F.interpolate(tensor, size=size, mode="nearest")
    else:
        out = F.interpolate(tensor, size=size, mode="bilinear", align_corners=False)
    out = out[0, 0] if array.ndim == 2 else out[0].permute(1, 2, 0)
    if array.dtype == np.uint8 and not nearest:
        out = out.round().clamp(0, 255)
    return out.numpy().astype(array.dtype)


class Resize:
    """Keep-ratio resize to short side ``short_side * r``, ``r ~ U(ratio_range)`` (mmseg ``Resize`` with
    ``img_scale=(long_side, short_side)``): image bilinear, target nearest."""

    def __init__(self, short_side: int, ratio_range: Sequence[float] | None = None, long_side: int = 99999999):
        self.short_side, self.long_side = int(short_side), int(long_side)
        self.ratio_range = tuple(ratio_range) if ratio_range is not None else None

    def __call__(self, image, target):
        ratio = 1.0
        if self.ratio_range is not None:
            low, high = self.ratio_range
            ratio = np.random.random_sample() * (high - low) + low
        height, width = image.shape[:2]
        size = keep_ratio_size(height, width, int(self.short_side * ratio), int(self.long_side * ratio))
        return _resize_array(image, size, nearest=False), _resize_array(target, size, nearest=True)


class RandomCrop:
    """Random ``crop_size`` (h, w) window (clipped to smaller images). With ``cat_max_ratio < 1`` (segmentation),
    up to 10 windows are drawn until no class (``ignore_index`` excluded) covers ``cat_max_ratio`` of it."""

    def __init__(self, crop_size, cat_max_ratio: float = 1.0, ignore_index: int = 255) -> None:
        self.crop_size, self.cat_max_ratio, self.ignore_index = _pair(crop_size), float(cat_max_ratio), ignore_index

    def _box(self, height: int, width: int) -> tuple[int, int, int, int]:
        offset_h = np.random.randint(0, max(height - self.crop_size[0], 0) + 1)
        offset_w = np.random.randint(0, max(width - self.crop_size[1], 0) + 1)
        return offset_h, offset_h + self.crop_size[0], offset_w, offset_w + self.crop_size[1]

    def __call__(self, image, target):
        y1, y2, x1, x2 = self._box(*image.shape[:2])
        if self.cat_max_ratio < 1.0:
            for _ in range(10):
                labels, counts = np.unique(target[y1:y2, x1:x2], return_counts=True)
                counts = counts[labels != self.ignore_index]
                if len(counts) > 1 and np.max(counts) / np.sum(counts) < self.cat_max_ratio:
                    break
                y1, y2, x1, x2 = self._box(*image.shape[:2])
        return image[y1:y2, x1:x2], target[y1:y2, x1:x2]


class RandomFlip:
    """Horizontal flip of image and target with probability ``prob``."""

    def __init__(self, prob: float = 0.5) -> None:
        self.prob = prob

    def __call__(self, image, target):
        if np.random.rand() < self.prob:
            return image[:, ::-1].copy(), target[:, ::-1].copy()
        return image, target


class RandomRotate:
    """Rotation by ``U(-degree, degree)`` about the centre with probability ``prob`` (depth toolbox): image
    bilinear with fill ``pad_val``, target nearest with fill ``target_pad_val`` (0: no depth; 255 for labels)."""

    def __init__(self, prob: float, degree: float, pad_val: float = 0, target_pad_val: float = 0) -> None:
        self.prob, self.degree, self.pad_val, self.target_pad_val = prob, float(degree), pad_val, target_pad_val

    def __call__(self, image, target):
        rotate = np.random.rand() < self.prob
        angle = float(np.random.uniform(-self.degree, self.degree))
        if not rotate:
            return image, target
        img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()
        img = TF.rotate(img, angle, InterpolationMode.BILINEAR, fill=[float(self.pad_val)] * img.shape[0])
        img = img.permute(1, 2, 0).numpy()
        if image.dtype == np.uint8:
            img = np.clip(np.round(img), 0, 255).astype(np.uint8)
        tgt = torch.from_numpy(np.ascontiguousarray(target)).float()[None]
        tgt = TF.rotate(tgt, angle, InterpolationMode.NEAREST, fill=[float(self.target_pad_val)])
        return img, tgt[0].numpy().astype(target.dtype)


def _convert(image: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    return np.clip(image.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


class PhotoMetricDistortion:
    """mmseg's photometric distortion of a uint8 image, each step with p 0.5: brightness +-32; contrast x U(0.5,
    1.5) before or after (p 0.5) saturation x U(0.5, 1.5) and hue +-18 / 180 of the colour circle."""

    def __init__(self, brightness_delta=32, contrast_range=(0.5, 1.5), saturation_range=(0.5, 1.5), hue_delta=18):
        self.brightness_delta, self.hue_delta = brightness_delta, hue_delta
        self.contrast_range, self.saturation_range = tuple(contrast_range), tuple(saturation_range)

    def _contrast(self, image):
        if np.random.randint(2):
            image = _convert(image, alpha=np.random.uniform(*self.contrast_range))
        return image

    def _hsv_step(self, image, channel: int, change: Callable[[np.ndarray], np.ndarray]):
        hsv = np.array(Image.fromarray(image).convert("HSV"))
        hsv[..., channel] = change(hsv[..., channel])
        return np.asarray(Image.fromarray(hsv, mode="HSV").convert("RGB"))

    def __call__(self, image, target):
        image = np.asarray(image, dtype=np.uint8)
        if np.random.randint(2):
            image = _convert(image, beta=np.random.uniform(-self.brightness_delta, self.brightness_delta))
        contrast_first = np.random.randint(2)
        if contrast_first == 1:
            image = self._contrast(image)
        if np.random.randint(2):
            alpha = np.random.uniform(*self.saturation_range)
            image = self._hsv_step(image, 1, lambda s: _convert(s, alpha=alpha))
        if np.random.randint(2):
            shift = round(np.random.randint(-self.hue_delta, self.hue_delta) * 256 / 180)  # OpenCV hue -> PIL hue
            image = self._hsv_step(image, 0, lambda h: ((h.astype(np.int64) + shift) % 256).astype(np.uint8))
        if contrast_first == 0:
            image = self._contrast(image)
        return image, target


class ColorAug:
    """Depth-toolbox colour augmentation with probability ``prob``: ``image ** gamma * brightness * colour``
    (per-channel colour), on the 0-255 scale, clipped; the image becomes float32."""

    def __init__(self, prob=0.5, gamma_range=(0.9, 1.1), brightness_range=(0.75, 1.25), color_range=(0.9, 1.1)):
        self.prob, self.gamma_range = prob, tuple(gamma_range)
        self.brightness_range, self.color_range = tuple(brightness_range), tuple(color_range)

    def __call__(self, image, target):
        if not np.random.rand() < self.prob:
            return image, target
        gamma = np.random.uniform(min(self.gamma_range), max(self.gamma_range))
        brightness = np.random.uniform(min(self.brightness_range), max(self.brightness_range))
        colours = np.random.uniform(min(self.color_range), max(self.color_range), size=3)
        augmented = np.power(image.astype(np.float32), gamma) * brightness * colours.astype(np.float32)
        return np.clip(augmented, 0, 255).astype(np.float32), target


class NYUCrop:
    """The NYU valid-area crop ``[45:472, 43:608]`` of image and target (480 x 640 -> 427 x 565)."""

    def __call__(self, image, target):
        return image[45:472, 43:608], target[45:472, 43:608]


class ToTensor:
    """Image -> normalised float ``[3, H, W]`` (ImageNet mean/std on the 0-1 scale, = the released 0-255
    values); target -> ``int64`` (``kind='segmentation'``) or ``float32`` (``depth``) ``[H, W]``."""

    def __init__(self, kind: str = "segmentation") -> None:
        if kind not in ("segmentation", "depth"):
            raise ValueError(f"kind must be segmentation or depth, got {kind!r}")
        self.kind = kind

    def __call__(self, image, target):
        if isinstance(image, Image.Image):
            image = np.asarray(image.convert("RGB"))
        tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1) / 255.0
        tensor = (tensor - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
        dtype = np.int64 if self.kind == "segmentation" else np.float32
        return tensor, torch.from_numpy(np.ascontiguousarray(target, dtype=dtype))


class Pad:
    """Pad tensors at the bottom / right up to ``size`` (h, w): image with ``pad_val`` (0 = the mean colour after
    normalisation, as mmseg's Pad after Normalize), target with ``target_pad_val`` (255 = ignore, 0 = no depth)."""

    def __init__(self, size, pad_val: float = 0.0, target_pad_val: float = 255) -> None:
        self.size, self.pad_val, self.target_pad_val = _pair(size), pad_val, target_pad_val

    def __call__(self, image: torch.Tensor, target: torch.Tensor):
        pad_h, pad_w = max(self.size[0] - image.shape[-2], 0), max(self.size[1] - image.shape[-1], 0)
        if pad_h == 0 and pad_w == 0:
            return image, target
        image = F.pad(image, (0, pad_w, 0, pad_h), value=self.pad_val)
        target = F.pad(target[None], (0, pad_w, 0, pad_h), value=self.target_pad_val)[0]
        return image, target


def make_segmentation_train_transform(
    crop_size=(512, 512), short_side: int = 512, ratio_range=(0.5, 2.0), cat_max_ratio: float = 0.75,
    flip_prob: float = 0.5, photometric: bool = True, ignore_index: int = 255,
) -> Compose:  # fmt: skip
    """The released mmseg training pipeline (see the module docstring); outputs tensors padded to ``crop_size``."""
    steps = [ToArrays(), Resize(short_side, ratio_range), RandomCrop(crop_size, cat_max_ratio, ignore_index)]
    steps += [RandomFlip(flip_prob)] + ([PhotoMetricDistortion()] if photometric else [])
    return Compose(steps + [ToTensor("segmentation"), Pad(crop_size, 0.0, ignore_index)])


def make_depth_train_transform(
    crop_size=(416, 544), nyu_crop: bool = True, rotate_prob: float = 0.5, rotate_degree: float = 2.5,
    flip_prob: float = 0.5, color_prob: float = 0.5, gamma_range=(0.9, 1.1), brightness_range=(0.75, 1.25),
    color_range=(0.9, 1.1),
) -> Compose:  # fmt: skip
    """The released NYU depth training pipeline (see the module docstring); outputs tensors padded (depth 0)
    to ``crop_size``."""
    steps = [ToArrays()] + ([NYUCrop()] if nyu_crop else [])
    steps += [RandomRotate(rotate_prob, rotate_degree, 0, 0), RandomFlip(flip_prob), RandomCrop(crop_size)]
    steps += [ColorAug(color_prob, gamma_range, brightness_range, color_range)]
    return Compose(steps + [ToTensor("depth"), Pad(crop_size, 0.0, 0.0)])


def make_dense_eval_transform(kind: str) -> Compose:
    """Evaluation: the full image, normalised (resizing and windows are part of inference)."""
    return Compose([ToArrays(), ToTensor(kind)])
