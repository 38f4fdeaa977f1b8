"""DINOv3's depther, as released in ``dinov3.eval.depth.models`` (same names, arguments and state-dict keys).

A :class:`Depther` is an ``encoder`` (:class:`DinoVisionTransformerWrapper`: a frozen DINOv3 / DINOv2 ViT or a
DINOv3 ConvNeXt, tapped at 4 blocks or stages on the image fitted to its patch size), a ``decoder`` (DPT,
:class:`~dinov2.heads.depth.dpt.DPTDecoder`, or :class:`LinearHead`) giving depth-bin logits, and
:class:`FeaturesToDepth` turning them into depth: the expected depth over bins spread linearly, logarithmically or
as CHMv2's mix of both. Input: normalised RGB ``[B, 3, H, W]``; output: depth ``[B, 1, H', W']``, not resized back
to the input, as released: for the DPT decoder on a patch-16 ViT ``H' = 32 ceil(h / 2)`` on the padded ``h x w``
token grid (the padded image's size when ``h`` and ``w`` are even), for the linear decoder the token grid.
The hub entry points ``dinov3_vit7b16_dd`` and ``dinov3_vitl16_chmv2`` are in :mod:`dinov2.hub.depthers`.

Deliberate differences from the release (numerics otherwise identical):

- ``autocast_dtype`` is honoured on every device, and ``torch.float32`` (the default) means no autocast. The
  release runs the whole depther under ``torch.autocast`` with that dtype on CUDA, but under CPU autocast's
  default (bfloat16) on a machine without CUDA, whatever ``autocast_dtype`` says; pass
  ``autocast_dtype=torch.bfloat16`` for its CPU numbers. Nothing is moved to CUDA behind the caller's back.
- Bad choices (bins / norm strategy, head type, readout, taps past the backbone) raise ``ValueError`` naming the
  valid ones instead of failing an ``assert``.
- ``make_depther_from_config(checkpoint_path=...)`` reads the file with ``weights_only=True`` (through
  :mod:`dinov2.models.weights`) and loads it strictly with a report of every difference.
- Batch norm is a plain ``BatchNorm2d`` (the released ``SyncBatchNorm``'s keys and eval arithmetic; convert with
  ``nn.SyncBatchNorm.convert_sync_batchnorm`` to train on several GPUs).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch
from torch import Tensor, nn

from dinov2.heads.depth.dpt import DPTDecoder
from dinov2.heads.depth.linear import NORM_STRATEGIES, FeatureList, bin_probabilities, tap_maps
from dinov2.heads.encoder_decoder import tapped_widths
from dinov2.heads.head_files import HeadSource, load_head_state
from dinov2.layers.center_padding import CenterPadding, StretchToMultiple
from dinov2.models.families import family_for_model

__all__ = [
    "BINS_STRATEGIES",
    "DEPTH_NORM_STRATEGIES",
    "BackboneLayersSet",
    "DPTHead",
    "DecoderConfig",
    "Depther",
    "DinoVisionTransformerWrapper",
    "EncoderDecoder",
    "FeaturesToDepth",
    "LinearHead",
    "PatchSizeAdaptationStrategy",
    "backbone_out_indices",
    "build_depther",
    "create_chmv2_mixlog_bins",
    "create_outputs_with_chmv2_mixlog_norm",
    "BACKBONE_PREFIX",
    "load_decoder_weights",
    "make_depther_from_config",
    "make_head",
]

DPTHead = DPTDecoder  # the released name of DINOv3's DPT decoder
BINS_STRATEGIES = ("linear", "log", "chmv2_mixlog")
DEPTH_NORM_STRATEGIES = (*NORM_STRATEGIES, "chmv2_mixlog")
HEAD_TYPES = ("linear", "dpt")


class BackboneLayersSet(Enum):
    """Which blocks the encoder taps: the last, the last four, or four evenly spaced ones."""

    LAST = "LAST"
    FOUR_LAST = "FOUR_LAST"
    FOUR_EVEN_INTERVALS = "FOUR_EVEN_INTERVALS"


class PatchSizeAdaptationStrategy(Enum):
    """How the encoder fits an image to its patch size: centred zero padding, stretching, or not at all."""

    CENTER_PADDING = "center_padding"
    STRETCH = "stretch"
    NO_ADAPTATION = "never"


def backbone_out_indices(n_blocks: int, layers: Sequence[int] | BackboneLayersSet | str) -> list[int]:
    """The tapped block indices (0-based), as released: a list as given; ``LAST``; ``FOUR_LAST``;
    ``FOUR_EVEN_INTERVALS`` ``[n/4 - 1, n/2 - 1, 3n/4 - 1, n - 1]`` (integer quarters), except ``[4, 11, 17, 23]``
    for 24 blocks (the release keeps its first ViT-L checkpoints' taps)."""
    if isinstance(layers, str):
        layers = BackboneLayersSet(layers)
    if isinstance(layers, BackboneLayersSet):
        if layers is BackboneLayersSet.LAST:
            indices = [n_blocks - 1]
        elif layers is BackboneLayersSet.FOUR_LAST:
            indices = list(range(n_blocks - 4, n_blocks))
        elif n_blocks == 24:
            indices = [4, 11, 17, 23]
        else:
            indices = [i * (n_blocks // 4) - 1 for i in range(1, 5)]
    else:
        indices = [int(i) for i in layers]
    if not all(0 <= i < n_blocks for i in indices):
        raise ValueError(
            f"backbone_out_layers {indices} do not fit a backbone of {n_blocks} blocks (0..{n_blocks - 1})"
        )
    return indices


class DinoVisionTransformerWrapper(nn.Module):
    """The depther's encoder: ``backbone`` (frozen) tapped at ``backbone_out_layers`` on the image fitted to its
    ``input_pad_size`` (a ConvNeXt's 4) or patch size; returns one ``(patch map [B, C, h, w], class token [B, C])``
    pair per tap, after the final norm when ``use_backbone_norm``."""

    def __init__(
        self,
        backbone_model: nn.Module,
        backbone_out_layers: str | Sequence[int] | BackboneLayersSet,
        use_backbone_norm: bool = False,
        adapt_to_patch_size: PatchSizeAdaptationStrategy = PatchSizeAdaptationStrategy.CENTER_PADDING,
    ) -> None:
        super().__init__()
        self.final_norm = use_backbone_norm
        self.backbone = backbone_model
        self.backbone_out_indices = backbone_out_indices(getattr(backbone_model, "n_blocks", 1), backbone_out_layers)
        self.embed_dims = tapped_widths(backbone_model, self.backbone_out_indices)
        multiple = getattr(backbone_model, "input_pad_size", None) or family_for_model(backbone_model).patch_size(
            backbone_model
        )
        adapt_to_patch_size = PatchSizeAdaptationStrategy(adapt_to_patch_size)
        self.patch_size_adapter: nn.Module = nn.Identity()
        if adapt_to_patch_size is PatchSizeAdaptationStrategy.CENTER_PADDING:
            self.patch_size_adapter = CenterPadding(multiple)
        elif adapt_to_patch_size is PatchSizeAdaptationStrategy.STRETCH:
            self.patch_size_adapter = StretchToMultiple(multiple)
        self.backbone.requires_grad_(False)

    def forward(self, x: Tensor) -> tuple[tuple[Tensor, Tensor], ...]:
        return self.backbone.get_intermediate_layers(
            self.patch_size_adapter(x),
            n=self.backbone_out_indices,
            reshape=True,
            return_class_token=True,
            norm=self.final_norm,
        )


# -------------------------------------------------------------------------------------------------- bins -> depth
def create_chmv2_mixlog_bins(min_depth: float, max_depth: float, n_bins: int, device: torch.device | str | None):
    """CHMv2's bins: from log-spaced at the near end to linear at the far end, over ``min_depth .. max_depth / 8``
    (the model predicts depth / 8; :func:`create_outputs_with_chmv2_mixlog_norm` multiplies back)."""
    scaled_max_depth = max_depth / 8.0
    linear = torch.linspace(min_depth, scaled_max_depth, n_bins, device=device)
    log_range = (torch.log(torch.tensor(min_depth)), torch.log(torch.tensor(scaled_max_depth)))
    log = torch.exp(torch.linspace(*log_range, n_bins, device=device))
    t = torch.linspace(1.0, 0.0, n_bins, device=device)
    return t * log + (1.0 - t) * linear


def create_outputs_with_chmv2_mixlog_norm(
    input: Tensor, bins: Tensor, max_clamp_value: float = 1e-4, eps_shift: float = 1e-8, eps: float = 1e-12
) -> Tensor:
    """CHMv2's depth (metres) from logits ``[B, K, H, W]``: ``relu``, a small positive shift, weights normalised to
    sum 1 over the bins (no exponential), the weighted sum of the bins, times 8."""
    y = torch.relu(input)
    shift = (-y.amin(dim=1, keepdim=True)).clamp_min(0.0).clamp_max(max_clamp_value) + eps_shift
    y_pos = y + shift
    denom = torch.nan_to_num(y_pos.sum(dim=1, keepdim=True), nan=1.0, posinf=1.0, neginf=1.0).clamp_min(eps)
    weights = y_pos / denom
    output = (weights * bins.view(1, -1, 1, 1).clamp_min(eps)).sum(dim=1, keepdim=True).clamp_min(eps)
    return output * 8.0


class FeaturesToDepth(nn.Module):
    """Decoder output ``[B, K, H, W]`` -> depth ``[B, 1, H, W]``: with one channel ``relu(x) + min_depth``; with
    ``K > 1`` the expected depth over ``K`` bins (AdaBins) placed by ``bins_strategy`` (``linear``, ``log``,
    ``chmv2_mixlog``) with weights from ``norm_strategy`` (``linear``, ``softmax``, ``sigmoid``, ``chmv2_mixlog``)."""

    def __init__(
        self,
        min_depth: float = 0.001,
        max_depth: float = 80,
        bins_strategy: str = "linear",
        norm_strategy: str = "linear",
    ) -> None:
        super().__init__()
        if bins_strategy not in BINS_STRATEGIES:
            raise ValueError(f"bins_strategy must be one of {', '.join(BINS_STRATEGIES)}, got {bins_strategy!r}")
        if norm_strategy not in DEPTH_NORM_STRATEGIES:
            raise ValueError(f"norm_strategy must be one of {', '.join(DEPTH_NORM_STRATEGIES)}, got {norm_strategy!r}")
        self.min_depth, self.max_depth = min_depth, max_depth
        self.bins_strategy, self.norm_strategy = bins_strategy, norm_strategy

    def bins(self, n_bins: int, device: torch.device | str | None = None) -> Tensor:
        """The ``n_bins`` bin depths (float32)."""
        if self.bins_strategy == "linear":
            return torch.linspace(self.min_depth, self.max_depth, n_bins, device=device)
        if self.bins_strategy == "log":
            log_range = (torch.log(torch.tensor(self.min_depth)), torch.log(torch.tensor(self.max_depth)))
            return torch.exp(torch.linspace(*log_range, n_bins, device=device))
        return create_chmv2_mixlog_bins(self.min_depth, self.max_depth, n_bins, device)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] == 1:  # plain regression
            return torch.relu(x) + self.min_depth
        bins = self.bins(x.shape[1], x.device)
        if self.norm_strategy == "chmv2_mixlog":
            return create_outputs_with_chmv2_mixlog_norm(x, bins)
        return torch.einsum("ikmn,k->imn", bin_probabilities(x, self.norm_strategy), bins).unsqueeze(dim=1)


# ------------------------------------------------------------------------------------------------------ decoders
class LinearHead(nn.Module):
    """DINOv3's linear depth decoder: the taps' patch maps (with their class tokens concatenated after the channels
    when ``use_cls_token``) resized to the first tap's grid and concatenated, optional batch norm, a 1x1 conv to
    ``n_output_channels`` logits (weights ``N(0, 0.01)``, bias 0). Keys ``conv_depth.*`` (``batchnorm_layer.*``)."""

    def __init__(
        self,
        in_channels: Sequence[int],
        n_output_channels: int,
        input_transform: str = "resize",
        align_corners: bool = False,
        use_batchnorm: bool = False,
        use_cls_token: bool = True,
    ) -> None:
        super().__init__()
        if input_transform != "resize":
            raise ValueError(f"input_transform must be 'resize' (the released choice), got {input_transform!r}")
        self.in_channels = list(in_channels)
        self.channels = sum(self.in_channels) * (2 if use_cls_token else 1)
        self.input_transform, self.align_corners = input_transform, align_corners
        self.n_output_channels, self.use_cls_token = n_output_channels, use_cls_token
        self.batchnorm_layer = nn.BatchNorm2d(self.channels) if use_batchnorm else nn.Identity()
        self.conv_depth = nn.Conv2d(self.channels, n_output_channels, kernel_size=1)
        nn.init.normal_(self.conv_depth.weight, mean=0, std=0.01)
        nn.init.constant_(self.conv_depth.bias, 0)

    def forward(self, inputs: FeatureList) -> Tensor:
        maps = tap_maps(inputs, with_cls=self.use_cls_token, align_corners=self.align_corners)
        return self.conv_depth(self.batchnorm_layer(maps))

    def predict(self, x: FeatureList, rescale_to: Sequence[int] = (512, 512)) -> Tensor:
        """Logits resized (bilinear) to ``rescale_to``."""
        return nn.functional.interpolate(self.forward(x), size=tuple(rescale_to), mode="bilinear")


def make_head(
    embed_dims: int | Sequence[int],
    n_output_channels: int,
    use_batchnorm: bool = False,
    use_cls_token: bool = False,
    head_type: str = "linear",
    **kwargs,
) -> nn.Module:
    """A fresh decoder on taps of widths ``embed_dims``: ``linear`` (:class:`LinearHead`) or ``dpt``
    (:class:`~dinov2.heads.depth.dpt.DPTDecoder`, ``kwargs`` passed on; the class token is projected in when
    ``use_cls_token``, else ignored)."""
    embed_dims = [embed_dims] if isinstance(embed_dims, int) else list(embed_dims)
    if head_type == "linear":
        return LinearHead(embed_dims, n_output_channels, use_batchnorm=use_batchnorm, use_cls_token=use_cls_token)
    if head_type == "dpt":
        readout_type = "project" if use_cls_token else "ignore"
        head = dict(n_output_channels=n_output_channels, readout_type=readout_type, use_batchnorm=use_batchnorm)
        return DPTDecoder(embed_dims, **head, **kwargs)
    raise ValueError(f"head_type must be one of {', '.join(HEAD_TYPES)}, got {head_type!r}")


# -------------------------------------------------------------------------------------------------------- models
class EncoderDecoder(nn.Module):
    """``decoder(encoder(x))`` (released; the depther adds the depth conversion)."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))


class Depther(nn.Module):
    """``features_to_depth(decoder(encoder(x)))`` under autocast to ``autocast_dtype`` (none for float32)."""

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        min_depth: float,
        max_depth: float,
        bins_strategy: str = "linear",
        norm_strategy: str = "linear",
        autocast_dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.features_to_depth = FeaturesToDepth(min_depth, max_depth, bins_strategy, norm_strategy)
        self.autocast_dtype = autocast_dtype

    def forward(self, x: Tensor) -> Tensor:
        enabled = self.autocast_dtype != torch.float32
        with torch.autocast(x.device.type, dtype=self.autocast_dtype, enabled=enabled):
            return self.features_to_depth(self.decoder(self.encoder(x)))


def build_depther(
    backbone: nn.Module,
    backbone_out_layers: Sequence[int] | BackboneLayersSet,
    n_output_channels: int,
    use_backbone_norm: bool = False,
    use_batchnorm: bool = False,
    use_cls_token: bool = False,
    adapt_to_patch_size: PatchSizeAdaptationStrategy = PatchSizeAdaptationStrategy.CENTER_PADDING,
    head_type: str = "dpt",
    autocast_dtype: torch.dtype = torch.float32,
    min_depth: float = 0.001,
    max_depth: float = 10.0,
    bins_strategy: str = "linear",
    norm_strategy: str = "linear",
    **kwargs,
) -> Depther:
    """A :class:`Depther` in eval mode: ``backbone`` (frozen) + a fresh decoder (``kwargs`` go to the DPT decoder)."""
    encoder = DinoVisionTransformerWrapper(backbone, backbone_out_layers, use_backbone_norm, adapt_to_patch_size)
    decoder = make_head(encoder.embed_dims, n_output_channels, use_batchnorm, use_cls_token, head_type, **kwargs)
    depther = Depther(encoder, decoder, min_depth, max_depth, bins_strategy, norm_strategy, autocast_dtype)
    return depther.eval()


@dataclass
class DecoderConfig:
    """A depther's decoder and depth conversion (released fields and defaults)."""

    min_depth: float = 0.001
    max_depth: float = 80
    bins_strategy: str = "linear"  # linear | log | chmv2_mixlog
    norm_strategy: str = "linear"  # linear | softmax | sigmoid | chmv2_mixlog
    head_kwargs: dict[str, Any] = field(default_factory=dict)
    backbone_out_layers: Any = BackboneLayersSet.FOUR_EVEN_INTERVALS  # or a list of block indices
    adapt_to_patch_size: PatchSizeAdaptationStrategy = PatchSizeAdaptationStrategy.CENTER_PADDING
    use_backbone_norm: bool = True
    type: str = "linear"  # linear | dpt
    n_output_channels: int = 256
    use_batchnorm: bool = False
    use_cls_token: bool = False


def make_depther_from_config(
    backbone: nn.Module,
    config: DecoderConfig,
    checkpoint_path: HeadSource | None = None,
    autocast_dtype: torch.dtype = torch.float32,
) -> Depther:
    """:func:`build_depther` as ``config`` says; ``checkpoint_path``: decoder weights to load (see
    :func:`load_decoder_weights`)."""
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    head_kwargs, fields["head_type"] = fields.pop("head_kwargs"), fields.pop("type")
    depther = build_depther(backbone, autocast_dtype=autocast_dtype, **fields, **head_kwargs)
    if checkpoint_path is not None:
        load_decoder_weights(depther, checkpoint_path)
    return depther


_DEPTHER_ADVICE = "Pass decoder weights made for this depther (same backbone taps, decoder type and sizes)."
BACKBONE_PREFIX = "encoder.backbone."  # the keys of a whole depther's backbone


def load_decoder_weights(depther: Depther, source: HeadSource, what: str = "the depther's decoder") -> None:
    """Load ``source`` strictly into ``depther.decoder`` (a released head file, a checkpoint of the release's depth
    evaluation: see :mod:`dinov2.heads.head_files`), or into the whole depther when it holds the backbone too."""
    load_head_state(
        depther, depther.decoder, source, backbone_prefix=BACKBONE_PREFIX, what=what, advice=_DEPTHER_ADVICE
    )
