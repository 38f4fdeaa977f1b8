"""Image transforms shared by training and evaluation (torchvision v1 API, PIL or tensor input)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision import transforms

from dinov2.utils.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

__all__ = [
    "IMAGENET_DEFAULT_MEAN",
    "IMAGENET_DEFAULT_STD",
    "GaussianBlur",
    "RandomGaussianBlur",
    "MaybeToTensor",
    "make_normalize_transform",
    "make_classification_train_transform",
    "make_classification_eval_transform",
]


class RandomGaussianBlur(transforms.RandomApply):
    """Blur with probability ``blur_probability``: Gaussian kernel ``kernel_size``, sigma ~ U(sigma_min, sigma_max).

    The released ``GaussianBlur(p=...)`` passes ``1 - p`` to ``RandomApply``, so its ``p`` is the
    probability of *not* blurring; here the argument says what it does. Like ``RandomApply`` it always
    draws one ``torch.rand(1)`` (and the sigma only when it blurs), so the random stream is the release's.
    """

    def __init__(
        self,
        blur_probability: float = 0.5,
        *,
        sigma_min: float = 0.1,
        sigma_max: float = 2.0,
        kernel_size: int = 9,
    ):
        if not 0.0 <= blur_probability <= 1.0:
            raise ValueError(f"blur_probability must be in [0, 1], got {blur_probability}")
        blur = transforms.GaussianBlur(kernel_size=kernel_size, sigma=(sigma_min, sigma_max))
        super().__init__(transforms=[blur], p=blur_probability)


class GaussianBlur(RandomGaussianBlur):
    """The released ``GaussianBlur(*, p, radius_min, radius_max)``, with its meaning kept for released code:
    ``p`` is the probability of *not* blurring (the release passes ``1 - p`` to ``RandomApply``). New code should
    use :class:`RandomGaussianBlur`, whose argument is the blur probability."""

    def __init__(self, *, p: float = 0.5, radius_min: float = 0.1, radius_max: float = 2.0):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        super().__init__(1.0 - p, sigma_min=radius_min, sigma_max=radius_max, kernel_size=9)


class MaybeToTensor(transforms.ToTensor):
    """``ToTensor`` that passes tensors through unchanged (PIL / ndarray -> float ``[C, H, W]`` in [0, 1])."""

    def __call__(self, pic):
        if isinstance(pic, torch.Tensor):
            return pic
        return super().__call__(pic)


def make_normalize_transform(
    mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
    std: Sequence[float] = IMAGENET_DEFAULT_STD,
) -> transforms.Normalize:
    """Channel-wise ``(x - mean) / std`` on a float ``[3, H, W]`` tensor in [0, 1]."""
    return transforms.Normalize(mean=mean, std=std)


def make_classification_train_transform(
    *,
    crop_size: int = 224,
    interpolation=transforms.InterpolationMode.BICUBIC,
    hflip_prob: float = 0.5,
    mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
    std: Sequence[float] = IMAGENET_DEFAULT_STD,
) -> transforms.Compose:
    """RandomResizedCrop(crop_size) + horizontal flip (if ``hflip_prob > 0``) + to tensor + normalise."""
    steps = [transforms.RandomResizedCrop(crop_size, interpolation=interpolation)]
    if hflip_prob > 0.0:
        steps.append(transforms.RandomHorizontalFlip(hflip_prob))
    steps += [MaybeToTensor(), make_normalize_transform(mean=mean, std=std)]
    return transforms.Compose(steps)


def make_classification_eval_transform(
    *,
    resize_size: int = 256,
    interpolation=transforms.InterpolationMode.BICUBIC,
    crop_size: int = 224,
    mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
    std: Sequence[float] = IMAGENET_DEFAULT_STD,
) -> transforms.Compose:
    """Resize the short side to ``resize_size``, centre-crop ``crop_size``, to tensor, normalise."""
    return transforms.Compose(
        [
            transforms.Resize(resize_size, interpolation=interpolation),
            transforms.CenterCrop(crop_size),
            MaybeToTensor(),
            make_normalize_transform(mean=mean, std=std),
        ]
    )
