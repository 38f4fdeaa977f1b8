"""Backbone + segmentation head with the released (mmseg 0.27) training and test-time semantics.

``model(img)`` gives logits at the input size (the training path); ``model.predict(images)`` runs the test
pipeline of :mod:`dinov2.heads.segmentation.inference` and returns the class map.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dinov2.data.dense_transforms import IMAGENET_MEAN, IMAGENET_STD
from dinov2.heads.encoder_decoder import EncoderDecoder
from dinov2.heads.segmentation.inference import SegmentationTestConfig, segmentation_probabilities

if TYPE_CHECKING:  # PIL is imported only when an image is given (keeps ``import hubconf`` light)
    from PIL import Image

__all__ = ["SegmentationEncoderDecoder", "image_to_tensor"]


def image_to_tensor(image: Image.Image) -> Tensor:
    """A PIL image -> normalised RGB ``[1, 3, H, W]`` float32."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0  # [H, W, 3]
    tensor = torch.from_numpy(array).permute(2, 0, 1)
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    return ((tensor - mean) / std).unsqueeze(0)


class SegmentationEncoderDecoder(EncoderDecoder):
    """``backbone`` tapped at blocks ``out_index`` (final norm applied, no class token) + ``decode_head``.

    The image is centre-padded to a multiple of the patch size for the backbone; the head's token-resolution
    logits are resized (bilinear) to the unpadded input size. ``test_cfg`` sets :meth:`predict`'s pipeline;
    ``class_names`` / ``palette`` (optional) describe the classes for display.
    """

    def __init__(
        self,
        backbone: nn.Module,
        decode_head: nn.Module,
        out_index: Sequence[int],
        test_cfg: SegmentationTestConfig | None = None,
        class_names: Sequence[str] | None = None,
        palette: Sequence[Sequence[int]] | None = None,
    ) -> None:
        super().__init__(backbone, decode_head, out_index)
        self.num_classes = decode_head.num_classes
        self.test_cfg = test_cfg or SegmentationTestConfig()
        self.class_names = tuple(class_names) if class_names is not None else None
        self.palette = tuple(tuple(c) for c in palette) if palette is not None else None

    def extract_feat(self, img: Tensor) -> tuple[Tensor, ...]:
        """Normalised patch tokens ``[B, C, h, w]`` of each tapped block, on the centre-padded image."""
        return self.tapped_blocks(img)

    def encode_decode(self, img: Tensor) -> Tensor:
        """Logits ``[B, K, H, W]`` at the (unpadded) input size."""
        logits = self.decode_head(self.extract_feat(img))
        return F.interpolate(logits, size=img.shape[2:], mode="bilinear", align_corners=self.align_corners)

    def forward(self, img: Tensor) -> Tensor:
        return self.encode_decode(img)

    def _as_batch(self, images: Tensor | Image.Image) -> Tensor:
        if not isinstance(images, Tensor) and hasattr(images, "convert"):  # a PIL image
            images = image_to_tensor(images)
        if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"predict expects a normalised RGB tensor [B, 3, H, W] or a PIL image, got {shape}")
        parameter = next(self.parameters())
        return images.to(device=parameter.device, dtype=parameter.dtype)

    @torch.no_grad()
    def predict(
        self,
        images: Tensor | Image.Image,
        return_probabilities: bool = False,
        **test_overrides,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Class map ``[B, H, W]`` (int64) of normalised RGB ``images [B, 3, H, W]`` or a PIL image.

        With ``return_probabilities`` also the averaged class probabilities ``[B, K, H, W]``. Keyword arguments
        override fields of ``test_cfg`` for this call (e.g. ``ratios=(1.0, 1.32, 1.73)``, the notebook's
        trimmed multi-scale test, or ``mode="whole"``). Runs in the model's current train/eval mode: call
        ``model.eval()`` first (the batch norm uses batch statistics in train mode).
        """
        cfg = dataclasses.replace(self.test_cfg, **test_overrides) if test_overrides else self.test_cfg
        batch = self._as_batch(images)
        probabilities = segmentation_probabilities(batch, self.encode_decode, self.num_classes, cfg)
        classes = probabilities.argmax(dim=1)
        return (classes, probabilities) if return_probabilities else classes
