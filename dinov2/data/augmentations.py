"""DINOv2 multi-crop augmentation: two global crops and ``L`` local crops per image."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torchvision import transforms
from torchvision.transforms.functional import to_pil_image

from . import fast_augment as ops
from .transforms import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, RandomGaussianBlur, make_normalize_transform

logger = logging.getLogger("dinov2")

__all__ = ["CropParams", "DataAugmentationDINO"]

_BICUBIC = transforms.InterpolationMode.BICUBIC
_ASPECT_RATIO = (3.0 / 4.0, 4.0 / 3.0)  # RandomResizedCrop default


@dataclass(frozen=True)
class _CropRecipe:
    """One kind of crop: output size, area scale range, and its blur / solarize probabilities."""

    size: int
    scale: tuple[float, float]
    blur_probability: float
    solarize_probability: float | None  # None: no solarize step at all (and no random draw)


@dataclass(frozen=True)
class CropParams:
    """The random choices of one crop, in source-image pixels (drawn by ``DataAugmentationDINO.draw_crop_params``).

    ``jitter_order`` is the order of the colour-jitter operations (0 brightness, 1 contrast, 2 saturation,
    3 hue) and ``None`` when the crop is not jittered; the four factors are then ``None`` too.
    """

    top: int
    left: int
    height: int
    width: int
    flip: bool
    jitter_order: tuple[int, ...] | None
    brightness: float | None
    contrast: float | None
    saturation: float | None
    hue: float | None
    grayscale: bool
    blur_sigma: float | None  # None: not blurred
    solarize: bool


def _shape_only(height: int, width: int) -> torch.Tensor:
    """A ``[1, height, width]`` tensor without storage: what ``RandomResizedCrop.get_params`` reads of an image."""
    return torch.empty((), dtype=torch.uint8).expand(1, height, width)


def _pair(value: Sequence[float], name: str) -> tuple[float, float]:
    lo, hi = (float(v) for v in value)
    if not 0.0 < lo <= hi:
        raise ValueError(f"{name} must be (min, max) with 0 < min <= max, got {tuple(value)}")
    return lo, hi


def _count(value: int, name: str, minimum: int) -> int:
    if int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def _probability(value: float, name: str) -> float:
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
    return float(value)


class DataAugmentationDINO:
    """Multi-crop augmentation of SPEC §5; returns the released output dict.

    Per crop: RandomResizedCrop (bicubic, area ``scale``) + horizontal flip -> colour jitter
    (brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1) with ``color_jitter_probability`` ->
    grayscale with ``grayscale_probability`` -> Gaussian blur (kernel 9, sigma U(0.1, 2)) with the
    crop's blur probability -> solarize (threshold 128, global crop 2 only) -> normalise.

    The probabilities are named by what they do and default to the *effective* values of the
    released training (whose ``GaussianBlur(p)`` inverts ``p``): global crop 1 never blurred, global
    crop 2 blurred with p 0.9 and solarized with p 0.2, local crops blurred with p 0.5.

    ``fast=True`` (default) runs the pixel operations on uint8/float tensors (``fast_augment.py``);
    ``fast=False`` runs the released torchvision-v1 PIL pipeline. Both draw their random parameters
    from the global torch RNG with the same calls in the same order, so for the same seed they
    choose the same crops, flips, jitter factors, blurs and solarizations; only pixel rounding
    differs (tests check both the rates and this agreement).

    ``__call__(image)`` takes a PIL image (or a uint8 tensor ``[3, H, W]``) and returns
    ``{"global_crops": [g1, g2], "global_crops_teacher": [g1, g2], "local_crops": [l_1..l_L],
    "offsets": ()}`` with float32 ``[3, S, S]`` normalised crops.
    """

    def __init__(
        self,
        global_crops_scale: Sequence[float],
        local_crops_scale: Sequence[float],
        local_crops_number: int,
        global_crops_size: int = 224,
        local_crops_size: int = 96,
        *,
        fast: bool = True,
        flip_probability: float = 0.5,
        color_jitter_probability: float = 0.8,
        grayscale_probability: float = 0.2,
        global_crop1_blur_probability: float = 0.0,
        global_crop2_blur_probability: float = 0.9,
        local_crops_blur_probability: float = 0.5,
        global_crop2_solarize_probability: float = 0.2,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        blur_kernel_size: int = 9,
        mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
        std: Sequence[float] = IMAGENET_DEFAULT_STD,
    ):
        self.local_crops_number = _count(local_crops_number, "local_crops_number", minimum=0)
        self.global_crops_size = _count(global_crops_size, "global_crops_size", minimum=1)
        self.local_crops_size = _count(local_crops_size, "local_crops_size", minimum=1)
        self.global_crops_scale = _pair(global_crops_scale, "global_crops_scale")
        self.local_crops_scale = _pair(local_crops_scale, "local_crops_scale")
        self.fast = bool(fast)
        self.flip_probability = _probability(flip_probability, "flip_probability")
        self.color_jitter_probability = _probability(color_jitter_probability, "color_jitter_probability")
        self.grayscale_probability = _probability(grayscale_probability, "grayscale_probability")
        self.blur_sigma = _pair(blur_sigma, "blur_sigma")
        self.blur_kernel_size = int(blur_kernel_size)
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        p = {
            name: _probability(value, name)
            for name, value in (
                ("global_crop1_blur_probability", global_crop1_blur_probability),
                ("global_crop2_blur_probability", global_crop2_blur_probability),
                ("global_crop2_solarize_probability", global_crop2_solarize_probability),
                ("local_crops_blur_probability", local_crops_blur_probability),
            )
        }
        global_size, global_scale = self.global_crops_size, self.global_crops_scale
        self.recipes = {
            "global1": _CropRecipe(global_size, global_scale, p["global_crop1_blur_probability"], None),
            "global2": _CropRecipe(
                global_size, global_scale, p["global_crop2_blur_probability"], p["global_crop2_solarize_probability"]
            ),
            "local": _CropRecipe(
                self.local_crops_size, self.local_crops_scale, p["local_crops_blur_probability"], None
            ),
        }
        self._scale_shift = ops.normalization_constants(self.mean, self.std)
        self._jitter = transforms.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)
        self._pil_pipelines = self._build_pil_pipelines()
        logger.info(
            "multi-crop augmentation (%s path): global %s scale %s, %d local %s scale %s",
            "fast tensor" if self.fast else "PIL",
            self.global_crops_size,
            self.global_crops_scale,
            self.local_crops_number,
            self.local_crops_size,
            self.local_crops_scale,
        )

    # ---------------------------------------------------------------------------- PIL path

    def _build_pil_pipelines(self) -> dict[str, tuple[transforms.Compose, transforms.Compose]]:
        """Released torchvision-v1 pipelines: (geometric, photometric) per crop kind."""
        color = transforms.Compose(
            [
                transforms.RandomApply([self._jitter], p=self.color_jitter_probability),
                transforms.RandomGrayscale(p=self.grayscale_probability),
            ]
        )
        to_tensor = transforms.Compose([transforms.ToTensor(), make_normalize_transform(self.mean, self.std)])
        pipelines = {}
        for name, recipe in self.recipes.items():
            geometric = transforms.Compose(
                [
                    transforms.RandomResizedCrop(recipe.size, scale=recipe.scale, interpolation=_BICUBIC),
                    transforms.RandomHorizontalFlip(p=self.flip_probability),
                ]
            )
            sigma_min, sigma_max = self.blur_sigma
            steps = [color, RandomGaussianBlur(recipe.blur_probability, sigma_min=sigma_min, sigma_max=sigma_max)]
            if recipe.solarize_probability is not None:
                steps.append(transforms.RandomSolarize(threshold=128, p=recipe.solarize_probability))
            pipelines[name] = (geometric, transforms.Compose([*steps, to_tensor]))
        return pipelines

    def _pil_crop(self, image: Image.Image, kind: str) -> torch.Tensor:
        geometric, photometric = self._pil_pipelines[kind]
        return photometric(geometric(image))

    # ------------------------------------------------------------------- random parameters

    @property
    def crop_kinds(self) -> list[str]:
        """Crop kinds in output order: ``global1``, ``global2``, then ``local`` once per local crop."""
        return ["global1", "global2"] + ["local"] * self.local_crops_number

    def draw_crop_params(
        self, kind: str, height: int, width: int, *, geometry: bool = True, colour: bool = True
    ) -> CropParams:
        """Draw one crop's random choices for a ``height`` x ``width`` image from the global torch RNG.

        The calls (and their order) are those of the released torchvision v1 transforms: RandomResizedCrop,
        RandomHorizontalFlip, RandomApply(ColorJitter), RandomGrayscale, GaussianBlur, RandomSolarize.
        ``geometry=False`` skips the first two (the crop is the whole image, unflipped) and ``colour=False`` the
        colour jitter and grayscale: DINOv3's local crops cut from a global crop, and its shared colour jitter.
        """
        recipe = self.recipes[kind]
        if geometry:
            top, left, crop_height, crop_width = transforms.RandomResizedCrop.get_params(
                _shape_only(height, width), list(recipe.scale), _ASPECT_RATIO
            )
            flip = bool(torch.rand(1) < self.flip_probability)
        else:
            top, left, crop_height, crop_width, flip = 0, 0, height, width, False
        order, factors, grayscale = self._draw_colour() if colour else (None, None, False)
        sigma = None
        if not recipe.blur_probability < torch.rand(1):
            sigma = transforms.GaussianBlur.get_params(*self.blur_sigma)
        solarize = recipe.solarize_probability is not None and torch.rand(1).item() < recipe.solarize_probability
        return CropParams(
            top, left, crop_height, crop_width, flip, order, *(factors or (None,) * 4), grayscale, sigma, solarize
        )

    def _draw_colour(self) -> tuple[tuple[int, ...] | None, list | None, bool]:
        """RandomApply(ColorJitter) then RandomGrayscale: ``(jitter order, jitter factors, grayscale)``."""
        order = factors = None
        if not self.color_jitter_probability < torch.rand(1):  # RandomApply: applied iff rand <= p
            jitter = self._jitter
            order, *factors = transforms.ColorJitter.get_params(
                jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue
            )
            order = tuple(order.tolist())
        return order, factors, bool(torch.rand(1) < self.grayscale_probability)

    def draw_params(self, height: int, width: int) -> list[CropParams]:
        """Every crop's random choices for one image, in :attr:`crop_kinds` order (the calls ``__call__`` makes)."""
        return [self.draw_crop_params(kind, height, width) for kind in self.crop_kinds]

    # ------------------------------------------------------------------------- tensor path

    def _jitter_tensor(self, x: torch.Tensor, params: CropParams) -> torch.Tensor:
        for fn_id in params.jitter_order:
            if fn_id == 0 and params.brightness is not None:
                x = ops.adjust_brightness(x, params.brightness)
            elif fn_id == 1 and params.contrast is not None:
                x = ops.adjust_contrast(x, params.contrast)
            elif fn_id == 2 and params.saturation is not None:
                x = ops.adjust_saturation(x, params.saturation)
            elif fn_id == 3 and params.hue is not None:
                x = ops.adjust_hue(x, params.hue)
        return x

    def apply_colour(self, x: torch.Tensor, params: CropParams) -> torch.Tensor:
        """The colour jitter and grayscale of ``params`` on a float ``[3, H, W]`` image on the 0..255 scale."""
        if params.jitter_order is not None:
            x = self._jitter_tensor(x, params)
        if params.grayscale:
            x = ops.to_grayscale(x)
        return x

    def apply_crop_params(self, image: torch.Tensor, params: CropParams, size: int) -> torch.Tensor:
        """The crop ``params`` describe, from a uint8 ``[3, H, W]`` image: normalised float32 ``[3, size, size]``."""
        crop = ops.resized_crop(image, params.top, params.left, params.height, params.width, size)  # uint8
        if params.flip:
            crop = ops.hflip(crop)
        x = self.apply_colour(crop.float(), params)  # [3, S, S], 0..255
        if params.blur_sigma is not None:
            x = ops.gaussian_blur(x, params.blur_sigma, self.blur_kernel_size)
        if params.solarize:
            x = ops.solarize(x.round_(), 128.0)  # solarize acts on 8-bit levels in the PIL path
        return ops.normalize_255(x, *self._scale_shift)

    def _tensor_crop(self, image: torch.Tensor, kind: str, *, colour: bool = True) -> torch.Tensor:
        """One crop from a uint8 ``[3, H, W]`` image; random draws mirror the v1 transforms one for one (``colour``:
        see :meth:`draw_crop_params`)."""
        params = self.draw_crop_params(kind, image.shape[-2], image.shape[-1], colour=colour)
        return self.apply_crop_params(image, params, self.recipes[kind].size)

    # ---------------------------------------------------------------------------- call

    def __call__(self, image: Image.Image | torch.Tensor) -> dict[str, Any]:
        if self.fast:
            pixels = ops.to_uint8_chw(image)
            make_crop = self._tensor_crop
        else:
            pixels = to_pil_image(image) if isinstance(image, torch.Tensor) else image
            if pixels.mode != "RGB":
                pixels = pixels.convert("RGB")
            make_crop = self._pil_crop
        global_crop_1 = make_crop(pixels, "global1")
        global_crop_2 = make_crop(pixels, "global2")
        local_crops = [make_crop(pixels, "local") for _ in range(self.local_crops_number)]
        return {
            "global_crops": [global_crop_1, global_crop_2],
            "global_crops_teacher": [global_crop_1, global_crop_2],
            "local_crops": local_crops,
            "offsets": (),
        }
