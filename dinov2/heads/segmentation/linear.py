"""The released linear segmentation heads: batch norm + 1x1 conv on patch features.

- :class:`LinearSegmentationHead` (``BNHead``): DINOv2's (mmseg ``BNHead``). Keys (under ``decode_head.`` in the
  released ``*_head.pth`` files): ``conv_seg.{weight,bias}``, ``bn.{weight,bias,running_mean,running_var,
  num_batches_tracked}``.
- :class:`LinearHead`: DINOv3's (``dinov3.eval.segmentation.models.heads.linear_head``, the decoder of
  ``build_segmentation_decoder(decoder_type="linear")``): dropout, batch norm (``batchnorm_layer.*``), then ``conv.*``,
  optionally on patch tokens concatenated with the class token.

Both releases use ``SyncBatchNorm``; a plain ``BatchNorm2d`` has the same keys and the same arithmetic in one process
(convert with ``nn.SyncBatchNorm.convert_sync_batchnorm`` to train on several).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BNHead", "LinearHead", "LinearSegmentationHead", "resize_and_concat"]


def resize_and_concat(inputs: Sequence[Tensor], align_corners: bool = False) -> Tensor:
    """Maps ``[B, C_i, h_i, w_i]`` resized (bilinear) to the first one's grid and concatenated: ``[B, sum C_i, h, w]``
    (a map already on that grid is taken as it is, which is what resizing it would give)."""
    size = inputs[0].shape[2:]
    maps = [
        x if x.shape[2:] == size else F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)
        for x in inputs
    ]
    return torch.cat(maps, dim=1)


class LinearSegmentationHead(nn.Module):
    """``conv_seg(bn(concat(resize(features))))``: per-patch class logits.

    ``in_channels``: channels of each input map (one per tapped block; the release's linear heads take the last
    block, the ``ms`` heads the last 4). Inputs ``[B, C_i, h, w]`` are resized (bilinear) to the first one's grid
    and concatenated. Output ``[B, num_classes, h, w]`` (token resolution).
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, *, align_corners: bool = False) -> None:
        super().__init__()
        self.in_channels = [int(c) for c in in_channels]
        self.channels = sum(self.in_channels)
        self.num_classes = int(num_classes)
        self.align_corners = align_corners
        self.conv_seg = nn.Conv2d(self.channels, self.num_classes, kernel_size=1)  # registered first (key order)
        self.bn = nn.BatchNorm2d(self.channels)
        nn.init.normal_(self.conv_seg.weight, mean=0.0, std=0.01)  # mmseg BaseDecodeHead.init_weights
        nn.init.zeros_(self.conv_seg.bias)

    def features(self, inputs: Sequence[Tensor]) -> Tensor:
        """Resized and concatenated inputs ``[B, sum(in_channels), h, w]`` (before the batch norm)."""
        if len(inputs) != len(self.in_channels):
            raise ValueError(f"the segmentation head expects {len(self.in_channels)} feature maps, got {len(inputs)}")
        return resize_and_concat(inputs, self.align_corners)

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        return self.conv_seg(self.bn(self.features(inputs)))


BNHead = LinearSegmentationHead  # the released class name (``dinov2.eval.segmentation.models.BNHead``)


class LinearHead(nn.Module):
    """DINOv3's linear segmentation decoder: ``conv(batchnorm_layer(dropout(concat(resize(inputs)))))``.

    ``in_channels``: the channels of each input map (one per tapped layer). ``inputs`` is a sequence of maps
    ``[B, C_i, h, w]`` (or vectors ``[B, C_i]``, taken as 1x1 maps), or with ``use_cls_token`` of ``(patch map, class
    token [B, C_i])`` pairs, the class token broadcast over the map and concatenated after it (``2 * sum C_i``
    channels). Output: per-patch logits ``[B, n_output_channels, h, w]``; :meth:`predict` (no dropout) resizes them to
    ``rescale_to``. Keys ``batchnorm_layer.*`` (none without ``use_batchnorm``) and ``conv.{weight,bias}``, initialised
    as released (normal, std 0.01; bias 0).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        n_output_channels: int,
        use_batchnorm: bool = True,
        use_cls_token: bool = False,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.channels = sum(in_channels) * (2 if use_cls_token else 1)
        self.n_output_channels = n_output_channels
        self.use_cls_token = use_cls_token
        self.batchnorm_layer = nn.BatchNorm2d(self.channels) if use_batchnorm else nn.Identity()
        self.conv = nn.Conv2d(self.channels, self.n_output_channels, kernel_size=1, padding=0, stride=1)
        self.dropout = nn.Dropout2d(dropout)
        nn.init.normal_(self.conv.weight, mean=0, std=0.01)
        nn.init.constant_(self.conv.bias, 0)

    def _transform_inputs(self, inputs: Sequence[Tensor]) -> Tensor:
        """The maps resized to the first one's grid and concatenated along channels."""
        return resize_and_concat(inputs)

    def _forward_feature(self, inputs: Sequence) -> Tensor:
        """The concatenated input features ``[B, channels, h, w]`` (class tokens joined with ``use_cls_token``)."""
        maps = []
        for x in inputs:
            if self.use_cls_token:
                if not isinstance(x, (tuple, list)) or len(x) != 2:
                    raise ValueError(
                        "use_cls_token=True needs (patch tokens, class token) pairs: pass the backbone's outputs with "
                        "return_class_token=True"
                    )
                x, cls_token = x
                x = x[:, :, None, None] if x.dim() == 2 else x
                maps.append(torch.cat((x, cls_token[:, :, None, None].expand_as(x)), 1))
            else:
                maps.append(x[:, :, None, None] if x.dim() == 2 else x)
        if sum(m.shape[1] for m in maps) != self.channels:
            raise ValueError(
                f"the linear head was built for {self.channels} input channels (in_channels={list(self.in_channels)}"
                f"{', with class tokens' if self.use_cls_token else ''}), got maps of {[m.shape[1] for m in maps]}"
            )
        return self._transform_inputs(maps)

    def forward(self, inputs: Sequence) -> Tensor:
        return self.conv(self.batchnorm_layer(self.dropout(self._forward_feature(inputs))))

    def predict(self, x: Sequence, rescale_to: Sequence[int] = (512, 512)) -> Tensor:
        """Logits without dropout, resized (bilinear) to ``rescale_to``: ``[B, n_output_channels, *rescale_to]``."""
        logits = self.conv(self.batchnorm_layer(self._forward_feature(x)))
        return F.interpolate(input=logits, size=rescale_to, mode="bilinear")
