"""The DINOv3 ConvNeXt backbones (tiny / small / base / large), with the release's outputs and state-dict keys.

The final norm is registered twice (``norm`` and ``norms.3`` are one module), so the state dict holds both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dinov2.layers.convnext_block import ConvNeXtBlock, LayerNorm2d
from dinov2.models.intermediate import IntermediateLayersMixin, last_or_listed
from dinov2.models.vision_transformer_v3 import features_dict, warn_ignored
from dinov2.utils.registry import Registry

CONVNEXT_SIZES: Registry[dict[str, list[int]]] = Registry(
    "DINOv3 ConvNeXt size",
    {
        "tiny": {"depths": [3, 3, 9, 3], "dims": [96, 192, 384, 768]},
        "small": {"depths": [3, 3, 27, 3], "dims": [96, 192, 384, 768]},
        "base": {"depths": [3, 3, 27, 3], "dims": [128, 256, 512, 1024]},
        "large": {"depths": [3, 3, 27, 3], "dims": [192, 384, 768, 1536]},
    },
)


class ConvNeXt(IntermediateLayersMixin, nn.Module):
    """Four stages of :class:`ConvNeXtBlock` at strides 4, 8, 16, 32; the "CLS" token is the pooled last stage.

    ``forward_features(x)`` returns the ViT-style dict (``x_norm_clstoken`` ``[B, C]``, empty ``x_storage_tokens``,
    ``x_norm_patchtokens`` ``[B, hw, C]`` at stride 32, ``x_prenorm``, ``masks``). With ``patch_size`` set (training
    configs: ``student.patch_size``), the patch tokens of both and the maps of ``get_intermediate_layers`` are
    resized to ``(H // patch_size, W // patch_size)``.
    """

    def __init__(
        self,
        in_chans: int = 3,
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = (96, 192, 384, 768),
        drop_path_rate: float = 0.0,
        layer_scale_init_value: float = 1e-6,
        patch_size: int | None = None,
        **ignored_kwargs: Any,
    ) -> None:
        super().__init__()
        warn_ignored(type(self).__name__, ignored_kwargs)
        if len(depths) != 4 or len(dims) != 4:
            raise ValueError(f"ConvNeXt needs 4 depths and 4 dims, got depths={list(depths)}, dims={list(dims)}")
        stem = nn.Sequential(nn.Conv2d(in_chans, dims[0], kernel_size=4, stride=4), LayerNorm2d(dims[0], eps=1e-6))
        downsamples = [
            nn.Sequential(LayerNorm2d(dims[i], eps=1e-6), nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2))
            for i in range(3)
        ]
        self.downsample_layers = nn.ModuleList([stem, *downsamples])
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        starts = [sum(depths[:i]) for i in range(4)]
        self.stages = nn.ModuleList(
            nn.Sequential(*(ConvNeXtBlock(dims[i], rates[starts[i] + j], layer_scale_init_value) for j in range(d)))
            for i, d in enumerate(depths)
        )
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Identity()
        self.embed_dim = self.num_features = dims[-1]
        self.embed_dims = list(dims)
        self.n_blocks = 4  # the stages ``get_intermediate_layers`` can tap (dense heads index them like ViT blocks)
        self.n_storage_tokens = 0
        # The release appends the final norm to a list of per-stage norms: same module, second state-dict name.
        self.norms = nn.ModuleList([nn.Identity(), nn.Identity(), nn.Identity(), self.norm])
        self.patch_size = patch_size
        self.input_pad_size = 4  # the stem's stride: what DINOv3's dense wrappers pad images to a multiple of

    def _on_patch_grid(self, maps: Tensor, height: int, width: int) -> Tensor:
        """Last-stage maps ``[B, C, h, w]`` resized to the ``(H // patch_size, W // patch_size)`` grid of a ViT with
        ``patch_size`` (bilinear, antialias, as :meth:`get_intermediate_layers`); unchanged without ``patch_size``.
        (Not released: the release's training indexes stride-32 tokens with the iBOT positions of a stride-16 grid,
        which fails; a ConvNeXt student of a ViT teacher needs its tokens on the teacher's grid.)"""
        if self.patch_size is None:
            return maps
        size = (height // self.patch_size, width // self.patch_size)
        return (
            maps if tuple(maps.shape[-2:]) == size else F.interpolate(maps, size=size, mode="bilinear", antialias=True)
        )

    def _stage(self, x: Tensor, i: int) -> Tensor:
        return self.stages[i](self.downsample_layers[i](x))

    def forward_features(
        self, x: Tensor | list[Tensor], masks: Tensor | list[Tensor | None] | None = None
    ) -> dict[str, Any] | list[dict[str, Any]]:
        """One dict per crop (a list of crops gives a list); ``masks`` are passed through unused."""
        if isinstance(x, Tensor):
            return self.forward_features([x], [masks])[0]
        masks_list = masks if masks is not None else [None] * len(x)
        outputs = []
        for crops, crop_masks in zip(x, masks_list):
            height, width = crops.shape[-2:]
            for i in range(4):
                crops = self._stage(crops, i)  # [B, C, h, w]
            pooled = crops.mean([-2, -1])  # [B, C]
            maps = self._on_patch_grid(crops, height, width)
            patches = maps.flatten(2).transpose(1, 2)  # [B, hw, C]
            normed = self.norm(torch.cat([pooled.unsqueeze(1), patches], dim=1))  # [B, 1 + hw, C]
            outputs.append(features_dict(normed[:, :1], normed[:, 1:], patches, crop_masks))
        return outputs

    def forward_features_list(self, x_list: Sequence[Tensor], masks_list: Sequence[Tensor | None]) -> list[dict]:
        """The release's list form of :meth:`forward_features`: one dict per crop batch."""
        return self.forward_features(list(x_list), list(masks_list))

    def _intermediate_outputs(
        self, x: Tensor, n: int | Sequence[int], norm: bool
    ) -> tuple[list[Tensor], list[Tensor], list[tuple[int, int]]]:
        """Per stage ``n`` names (0..3): patches ``[B, hw, C]`` (resized to the ``patch_size`` grid when set), the
        pooled token ``[B, C]`` and the grid. ``norm`` applies ``norms[i]`` (the final norm on stage 3, identity
        elsewhere), as the release pairs them: in the order of ``n``."""
        take = last_or_listed(n, 4)
        height, width = x.shape[-2:]
        outputs = []
        for i in range(4):
            x = self._stage(x, i)
            if i in take:
                maps = x
                if self.patch_size is not None:
                    size = (height // self.patch_size, width // self.patch_size)
                    maps = F.interpolate(x, size=size, mode="bilinear", antialias=True)
                outputs.append((x.mean([-2, -1]), maps))
        if len(outputs) != len(take):
            raise ValueError(f"get_intermediate_layers: n={n!r} asks for stages outside 0..3")
        grids = [tuple(maps.shape[-2:]) for _, maps in outputs]
        outputs = [(cls, maps.flatten(-2, -1).permute(0, 2, 1)) for cls, maps in outputs]  # [B, hw, C]
        if norm:
            norms = [self.norms[i] for i in take]
            outputs = [(layer(cls), layer(patches)) for (cls, patches), layer in zip(outputs, norms)]
        return [patches for _, patches in outputs], [cls for cls, _ in outputs], grids

    def forward(self, *args, is_training: bool = False, **kwargs) -> Tensor | dict[str, Any] | list[dict[str, Any]]:
        """``head(x_norm_clstoken)`` (the head is the identity), or the feature dict(s) when ``is_training``."""
        out = self.forward_features(*args, **kwargs)
        return out if is_training else self.head(out["x_norm_clstoken"])

    @torch.no_grad()
    def init_weights(self) -> None:
        """Trunc-normal 0.02 convolutions and linears with zero biases; norms to 1 / 0; layer scale to its init."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.LayerNorm, LayerNorm2d)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, ConvNeXtBlock) and module.gamma is not None:
                module.gamma.fill_(module.layer_scale_init_value)


convnext_sizes = CONVNEXT_SIZES  # the release's name
Block = ConvNeXtBlock  # the release's name (dinov3.models.convnext.Block)


def get_convnext_arch(arch_name: str) -> Callable[..., ConvNeXt]:
    """The release's ``ConvNeXt`` constructor of ``convnext_<size>`` (``tiny``, ``small``, ``base``, ``large``)."""
    size = arch_name.split("_")[1] if "_" in arch_name else arch_name
    if size not in CONVNEXT_SIZES:
        sizes = ", ".join(f"convnext_{name}" for name in CONVNEXT_SIZES)
        raise NotImplementedError(f"unknown ConvNeXt arch {arch_name!r}; choose one of {sizes}")
    return partial(ConvNeXt, **CONVNEXT_SIZES[size])


def _convnext(size: str, **kwargs: Any) -> ConvNeXt:
    return ConvNeXt(**{**CONVNEXT_SIZES[size], **kwargs})


def convnext_tiny(**kwargs: Any) -> ConvNeXt:
    """ConvNeXt-T: depths 3-3-9-3, widths 96-768."""
    return _convnext("tiny", **kwargs)


def convnext_small(**kwargs: Any) -> ConvNeXt:
    """ConvNeXt-S: depths 3-3-27-3, widths 96-768."""
    return _convnext("small", **kwargs)


def convnext_base(**kwargs: Any) -> ConvNeXt:
    """ConvNeXt-B: depths 3-3-27-3, widths 128-1024."""
    return _convnext("base", **kwargs)


def convnext_large(**kwargs: Any) -> ConvNeXt:
    """ConvNeXt-L: depths 3-3-27-3, widths 192-1536."""
    return _convnext("large", **kwargs)


def build_from_student_cfg(student_section: Mapping[str, Any], img_size: int = 224) -> ConvNeXt:
    """The ConvNeXt named by ``student.arch`` (``convnext_tiny`` ... ``convnext_large``), as the release builds it.

    ``student.patch_size`` sets the resize of intermediate maps, ``student.drop_path_rate`` the stochastic depth;
    ``img_size`` is accepted for a uniform builder signature (ConvNeXt works at any size).
    """
    arch = str(student_section.get("arch", ""))
    size = arch.removeprefix("convnext_")
    if not arch.startswith("convnext_") or size not in CONVNEXT_SIZES:
        raise ValueError(
            f"student.arch={arch!r} is not a DINOv3 ConvNeXt; choose convnext_{{{','.join(CONVNEXT_SIZES)}}}"
        )
    return _convnext(
        size,
        in_chans=student_section.get("in_chans", 3),
        drop_path_rate=student_section.get("drop_path_rate", 0.0),
        patch_size=student_section.get("patch_size"),
    )
