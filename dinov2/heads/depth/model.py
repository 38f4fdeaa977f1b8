"""Backbone + depth head: the released ``DepthEncoderDecoder`` inference semantics, trainable.

The image is centre-padded to a multiple of the patch size for the backbone only; the head runs on the padded
token grid; its output is clamped to ``[min_depth, max_depth]`` and (``rescale``) resized bilinearly to the
**unpadded** input size, so the padded border is squeezed in rather than cropped off, as in the release.

Differences from the release: ``backbone`` stays a plain :class:`DinoVisionTransformer` (the release replaced
its ``forward`` by ``get_intermediate_layers`` and padded in an inference-mode pre-hook, so nothing could be
trained through it); ``model(img)`` runs inference (the release's ``forward`` needed mmcv-style training
arguments).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from dinov2.heads.encoder_decoder import EncoderDecoder
from dinov2.heads.sliding_window import sliding_window_average

__all__ = ["DepthEncoderDecoder"]


class DepthEncoderDecoder(EncoderDecoder):
    """``backbone`` (a DINOv2 ViT) tapped at blocks ``out_index`` (no final norm, with class tokens) + ``decode_head``.

    Input: normalised RGB ``[B, 3, H, W]`` of any size. ``model(img)`` = ``whole_inference(img)``: depth
    ``[B, 1, H, W]``. ``decode_head`` must have ``min_depth``, ``max_depth`` and ``align_corners``.
    """

    def extract_feat(self, img: Tensor) -> tuple[tuple[Tensor, Tensor], ...]:
        """``(patch [B, C, h, w], cls [B, C])`` per tapped block, on the centre-padded image."""
        return self.tapped_blocks(img, return_class_token=True, norm=False)

    def forward_head(self, img: Tensor) -> Tensor:
        """Raw head output on the padded token grid (no clamp, no resize): what the training losses see."""
        return self.decode_head(self.extract_feat(img))

    def encode_decode(self, img: Tensor, img_metas=None, rescale: bool = True, size=None) -> Tensor:
        """Head output clamped to the depth range, resized to ``size`` / ``img_metas[0]["ori_shape"]`` / the
        unpadded input size when ``rescale``."""
        out = self.forward_head(img)
        out = torch.clamp(out, min=self.decode_head.min_depth, max=self.decode_head.max_depth)
        if rescale:
            if size is None:
                size = img_metas[0]["ori_shape"][:2] if img_metas is not None else img.shape[2:]
            out = F.interpolate(
                out, size=tuple(int(s) for s in size), mode="bilinear", align_corners=self.align_corners
            )
        return out

    def whole_inference(self, img: Tensor, img_meta=None, rescale: bool = True, size=None) -> Tensor:
        """The released call: ``model.whole_inference(img, img_meta=None, rescale=True)`` -> ``[B, 1, H, W]``."""
        return self.encode_decode(img, img_meta, rescale, size=size)

    def slide_inference(
        self, img: Tensor, img_meta=None, rescale: bool = True, stride=(320, 320), crop_size=(640, 640)
    ) -> Tensor:
        """Average of :meth:`encode_decode` over overlapping ``crop_size`` windows (``stride`` apart); windows
        larger than the image are clipped to it. Output ``[B, 1, H, W]``."""
        return sliding_window_average(img, lambda crop: self.encode_decode(crop, None, rescale), 1, crop_size, stride)

    def forward(self, img: Tensor) -> Tensor:
        return self.whole_inference(img, None, rescale=True)
