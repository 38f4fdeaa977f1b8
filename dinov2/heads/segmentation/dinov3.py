"""DINOv3's segmentor, as released in ``dinov3.eval.segmentation.models`` (same names, arguments and state-dict keys).

A :class:`FeatureDecoder` holds ``segmentation_model``, a ``ModuleList`` of the
:class:`~dinov2.heads.segmentation.adapter.DINOv3_Adapter` (a frozen DINOv3 ViT tapped at 4 blocks + a trainable
convolutional and deformable-attention adapter) and the
:class:`~dinov2.heads.segmentation.mask2former.Mask2FormerHead`. ``forward(images)`` gives Mask2Former's
predictions (``pred_logits`` ``[B, 100, K + 1]``, ``pred_masks`` ``[B, 100, H/4, W/4]``, ``aux_outputs``) for a
normalised RGB batch ``[B, 3, H, W]`` with sides that are multiples of 32; ``predict(images, rescale_to)``
(inference mode) resizes the masks. The hub entry point ``dinov3_vit7b16_ms`` is in :mod:`dinov2.hub.segmentors`.

Deliberate differences from the release (numerics otherwise identical):

- Autocast: ``autocast_dtype`` applies to CUDA inputs only, and ``torch.float32`` means none. The release always
  enters ``torch.autocast(device_type="cuda", dtype=autocast_dtype)``: CUDA autocast, which does nothing to a CPU
  computation and is disabled with a warning on a machine without CUDA; so on both kinds of machine the numbers are
  the release's, without the warning. As released, the backbone runs under bfloat16 autocast on CUDA, and the
  pixel decoder and the deformable-attention cores in float32.
- ``decoder_type="linear"`` (the release's default) is not served (the released hub has no DINOv3 linear
  segmentor; DINOv2's are in :mod:`dinov2.hub.segmentors`): :func:`build_segmentation_decoder` raises
  ``NotImplementedError`` for it and defaults to ``"m2f"``.
- Weights load strictly (:func:`load_segmentor_weights`) with a report of every difference; the release loads
  with ``strict=False`` and asserts that only backbone keys are missing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import Tensor, nn

from dinov2.heads.depth.depther import BackboneLayersSet, backbone_out_indices
from dinov2.heads.head_files import HeadSource, load_head_state, without_module
from dinov2.heads.segmentation.adapter import DINOv3_Adapter
from dinov2.heads.segmentation.mask2former import Mask2FormerHead

__all__ = [
    "BACKBONE_PREFIX",
    "BackboneLayersSet",
    "DINOv3_Adapter",
    "DECODER_TYPES",
    "FeatureDecoder",
    "Mask2FormerHead",
    "build_segmentation_decoder",
    "load_segmentor_weights",
]

DECODER_TYPES = ("m2f", "linear")
BACKBONE_PREFIX = "segmentation_model.0.backbone."  # the keys a released head file leaves out
_ADVICE = "Pass segmentor weights made for this model (same backbone width and taps, hidden_dim and classes)."


class FeatureDecoder(nn.Module):
    """``segmentation_model[1](segmentation_model[0](x))``: the adapter (with the backbone) then the head.

    ``autocast_ctx``: a zero-argument callable returning the context to run in (the release's
    ``partial(torch.autocast, ...)``); by default CUDA autocast to ``autocast_dtype`` on CUDA inputs (none for
    float32; see the module docstring)."""

    def __init__(
        self,
        segmentation_model: nn.ModuleList,
        autocast_ctx: Callable[[], AbstractContextManager] | None = None,
        autocast_dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.segmentation_model = segmentation_model
        self.autocast_ctx = autocast_ctx
        self.autocast_dtype = autocast_dtype

    def _autocast(self, inputs: Tensor) -> AbstractContextManager:
        if self.autocast_ctx is not None:
            return self.autocast_ctx()
        enabled = inputs.device.type == "cuda" and self.autocast_dtype != torch.float32
        return torch.autocast("cuda", dtype=self.autocast_dtype, enabled=enabled)

    def forward(self, inputs: Tensor) -> Any:
        """Images ``[B, 3, H, W]`` -> the head's output (Mask2Former: a dict, see the module docstring)."""
        with self._autocast(inputs):
            for module in self.segmentation_model:
                inputs = module(inputs)
        return inputs

    def predict(self, inputs: Tensor, rescale_to: Sequence[int] = (512, 512)) -> Any:
        """The head's ``predict`` (masks resized to ``rescale_to``), in inference mode."""
        with torch.inference_mode(), self._autocast(inputs):
            features = self.segmentation_model[0](inputs)
            return self.segmentation_model[1].predict(features, rescale_to=rescale_to)


def build_segmentation_decoder(
    backbone_model: nn.Module,
    backbone_out_layers: BackboneLayersSet | Sequence[int] | str = BackboneLayersSet.FOUR_EVEN_INTERVALS,
    decoder_type: str = "m2f",
    hidden_dim: int = 2048,
    num_classes: int = 150,
    dropout: float = 0.1,
    autocast_dtype: torch.dtype = torch.float32,
) -> FeatureDecoder:
    """A fresh segmentor on ``backbone_model`` (a DINOv3 ViT, frozen): the adapter tapping ``backbone_out_layers``
    (in eval mode, as released) and a ``hidden_dim`` wide Mask2Former head for ``num_classes`` classes. ``dropout``
    belongs to the linear decoder (not served here)."""
    if decoder_type not in DECODER_TYPES:
        raise ValueError(f"decoder_type must be one of {', '.join(DECODER_TYPES)}, got {decoder_type!r}")
    if decoder_type == "linear":
        raise NotImplementedError(
            "decoder_type='linear' is not served here (the release publishes no DINOv3 linear segmentor): use "
            "decoder_type='m2f', or DINOv2's linear segmentors (dinov2.hub.segmentors)"
        )
    indices = backbone_out_indices(getattr(backbone_model, "n_blocks", 1), backbone_out_layers)
    adapter = DINOv3_Adapter(backbone_model, interaction_indexes=indices)
    adapter.eval()
    embed_dim, patch_size = adapter.backbone.embed_dim, adapter.patch_size
    # [channels, height, width, stride] as released: the nominal sizes are not read, every stride says 4
    input_shape = {
        "1": [embed_dim, patch_size * 4, patch_size * 4, 4],
        "2": [embed_dim, patch_size * 2, patch_size * 2, 4],
        "3": [embed_dim, patch_size, patch_size, 4],
        "4": [embed_dim, int(patch_size / 2), int(patch_size / 2), 4],
    }
    head = Mask2FormerHead(input_shape=input_shape, hidden_dim=hidden_dim, num_classes=num_classes, ignore_value=255)
    return FeatureDecoder(nn.ModuleList([adapter, head]), autocast_dtype=autocast_dtype)


def load_segmentor_weights(
    segmentor: FeatureDecoder, source: HeadSource, what: str = "the segmentor's adapter and head"
) -> None:
    """Load ``source`` strictly: a released head file (every key but the backbone's ``segmentation_model.0.backbone.*``;
    or a checkpoint of the release's evaluation: see :mod:`dinov2.heads.head_files`) into the segmentor but its
    backbone, or a whole segmentor into all of it; a mismatch raises before anything is copied, listing every
    difference."""
    head = without_module(segmentor, BACKBONE_PREFIX.removesuffix("."))
    load_head_state(segmentor, head, source, backbone_prefix=BACKBONE_PREFIX, what=what, advice=_ADVICE)
