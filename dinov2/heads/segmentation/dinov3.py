"""DINOv3's segmentors, as released in ``dinov3.eval.segmentation.models`` (same names, arguments and state-dict
keys).

A :class:`FeatureDecoder` holds ``segmentation_model``, a ``ModuleList`` of an encoder and a decoder;
:func:`build_segmentation_decoder` makes one of the two the release makes on a DINOv3 backbone:

- ``decoder_type="m2f"``: the :class:`~dinov2.heads.segmentation.adapter.DINOv3_Adapter` (a frozen DINOv3 ViT tapped
  at 4 blocks + a trainable convolutional and deformable-attention adapter) and the
  :class:`~dinov2.heads.segmentation.mask2former.Mask2FormerHead`. ``forward(images)`` gives Mask2Former's
  predictions (``pred_logits`` ``[B, 100, K + 1]``, ``pred_masks`` ``[B, 100, H/4, W/4]``, ``aux_outputs``) for a
  normalised RGB batch ``[B, 3, H, W]`` with sides that are multiples of 32; ``predict(images, rescale_to)``
  (inference mode) resizes the masks. The hub entry point ``dinov3_vit7b16_ms`` is in :mod:`dinov2.hub.segmentors`.
- ``decoder_type="linear"`` (the release's default): :class:`ModelWithIntermediateLayers` (the frozen backbone's
  patch maps at the taps, without gradients) and the :class:`~dinov2.heads.segmentation.linear.LinearHead` (dropout,
  batch norm, 1x1 conv); ``forward`` gives per-patch logits ``[B, K, H/p, W/p]``, ``predict`` resizes them. The
  release publishes no weights for it: it is the decoder of its linear segmentation evaluation.

Deliberate differences from the release (numerics otherwise identical):

- Autocast: ``autocast_dtype`` applies to CUDA inputs only, and ``torch.float32`` means none. The release always
  enters ``torch.autocast(device_type="cuda", dtype=autocast_dtype)``: CUDA autocast, which does nothing to a CPU
  computation and is disabled with a warning on a machine without CUDA; so on both kinds of machine the numbers are
  the release's, without the warning. As released, the backbone runs under bfloat16 autocast on CUDA, and the
  pixel decoder and the deformable-attention cores in float32.
- Weights load strictly (:func:`load_segmentor_weights`) with a report of every difference; the release loads
  with ``strict=False`` and asserts that only backbone keys are missing.
- The linear decoder's batch norm is ``BatchNorm2d`` (the release's ``SyncBatchNorm``: same keys, and the same
  arithmetic in one process; convert with ``nn.SyncBatchNorm.convert_sync_batchnorm`` to train on several), and on
  a ConvNeXt it takes each tapped stage's width (the release builds it for the last stage's width at every tap,
  which fails on the first batch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn

from dinov2.heads.depth.depther import BackboneLayersSet, backbone_out_indices
from dinov2.heads.head_files import HeadSource, load_head_state, without_module
from dinov2.heads.segmentation.adapter import DINOv3_Adapter
from dinov2.heads.segmentation.linear import LinearHead
from dinov2.heads.segmentation.mask2former import Mask2FormerHead

__all__ = [
    "BACKBONE_PREFIX",
    "BackboneLayersSet",
    "DINOv3_Adapter",
    "DECODER_TYPES",
    "LINEAR_BACKBONE_PREFIX",
    "FeatureDecoder",
    "LinearHead",
    "Mask2FormerHead",
    "ModelWithIntermediateLayers",
    "build_segmentation_decoder",
    "load_segmentor_weights",
]

DECODER_TYPES = ("m2f", "linear")
BACKBONE_PREFIX = "segmentation_model.0.backbone."  # the keys a released head file leaves out
LINEAR_BACKBONE_PREFIX = "segmentation_model.0.feature_model."  # the same keys of the linear decoder's encoder
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


class ModelWithIntermediateLayers(nn.Module):
    """The frozen ``feature_model``'s ``get_intermediate_layers(images, n=n, reshape=reshape,
    return_class_token=return_class_token)`` in inference mode, inside ``autocast_ctx()`` (as released in
    ``dinov3.eval.utils``; ``n``: the layer indices, or how many last layers). The module is put in eval mode."""

    def __init__(
        self,
        feature_model: nn.Module,
        n: int | Sequence[int],
        autocast_ctx: Callable[[], AbstractContextManager],
        reshape: bool = False,
        return_class_token: bool = True,
    ) -> None:
        super().__init__()
        self.feature_model = feature_model
        self.feature_model.eval()
        self.n = n
        self.autocast_ctx = autocast_ctx
        self.reshape = reshape
        self.return_class_token = return_class_token

    def forward(self, images: Tensor) -> tuple:
        with torch.inference_mode(), self.autocast_ctx():
            return self.feature_model.get_intermediate_layers(
                images, n=self.n, reshape=self.reshape, return_class_token=self.return_class_token
            )


def build_segmentation_decoder(
    backbone_model: nn.Module,
    backbone_out_layers: BackboneLayersSet | Sequence[int] | str = BackboneLayersSet.FOUR_EVEN_INTERVALS,
    decoder_type: str = "linear",
    hidden_dim: int = 2048,
    num_classes: int = 150,
    dropout: float = 0.1,
    autocast_dtype: torch.dtype = torch.float32,
) -> FeatureDecoder:
    """A fresh segmentor on ``backbone_model`` (a DINOv3 backbone, frozen), tapped at ``backbone_out_layers``:

    - ``"linear"``: the backbone's patch maps (without gradients) and a :class:`LinearHead` for ``num_classes``
      classes with ``dropout`` (one input per tap, the backbone's width each);
    - ``"m2f"``: the adapter (in eval mode, as released; a ViT with 4 taps) and a ``hidden_dim`` wide Mask2Former
      head for ``num_classes`` classes.
    """
    if decoder_type not in DECODER_TYPES:
        raise ValueError(f"decoder_type must be one of {', '.join(DECODER_TYPES)}, got {decoder_type!r}")
    indices = backbone_out_indices(getattr(backbone_model, "n_blocks", 1), backbone_out_layers)
    if decoder_type == "linear":
        # the FeatureDecoder's autocast covers the backbone (the release enters the same context twice)
        encoder = ModelWithIntermediateLayers(backbone_model, indices, nullcontext, True, return_class_token=False)
        encoder.requires_grad_(False)
        stage_widths = getattr(backbone_model, "embed_dims", None)  # a ConvNeXt's, one per stage
        widths = [stage_widths[i] for i in indices] if stage_widths else [backbone_model.embed_dim] * len(indices)
        decoder = LinearHead(in_channels=widths, n_output_channels=num_classes, dropout=dropout)
        return FeatureDecoder(nn.ModuleList([encoder, decoder]), autocast_dtype=autocast_dtype)
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
    """Load ``source`` strictly: a head file (every key but the backbone's: ``segmentation_model.0.backbone.*``, or
    ``segmentation_model.0.feature_model.*`` for the linear decoder; or a checkpoint of the release's evaluation: see
    :mod:`dinov2.heads.head_files`) into the segmentor but its backbone, or a whole segmentor into all of it; a
    mismatch raises before anything is copied, listing every difference."""
    linear = isinstance(segmentor.segmentation_model[0], ModelWithIntermediateLayers)
    prefix = LINEAR_BACKBONE_PREFIX if linear else BACKBONE_PREFIX
    head = without_module(segmentor, prefix.removesuffix("."))
    load_head_state(segmentor, head, source, backbone_prefix=prefix, what=what, advice=_ADVICE)
