"""Hub entry points for the released ImageNet-1k linear classifiers on frozen DINOv2 backbones (SPEC.md §6), and
DINOv3's ``dinov3_vit7b16_lc`` (:func:`dinov3_vit7b16_lc`).

``weights`` of a ``*_lc`` entry point is a :class:`Weights` value (released backbone + head files) or a local
file holding either a linear head (``weight``, ``bias``: the released head format, also what our linear
evaluation saves) or a whole classifier (``backbone.*``, ``linear_head.*``). ``backbone_weights`` picks the
backbone separately (released weights by default, or a local file) when ``weights`` is a head file.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

from torch import Tensor, nn

from dinov2.heads.classifier import HUB_LAYERS, backbone_blocks, is_linear_head_state_dict, linear_head_input
from dinov2.hub import catalog, dinov3_backbones
from dinov2.hub.backbones import REGISTER_SETTINGS, WeightsArg, _make_dinov2_model
from dinov2.hub.backbones import Weights as BackboneWeights
from dinov2.hub.dinov3_backbones import Weights as DINOv3Weights
from dinov2.hub.dinov3_backbones import head_weights_source
from dinov2.hub.utils import load_strict, resolve_weights
from dinov2.models.convert import chunked_to_flat, strip_prefix
from dinov2.models.weights import read_checkpoint

_IMAGENET_CLASSES = 1000


class Weights(Enum):
    IMAGENET1K = "IMAGENET1K"


class _LinearClassifierWrapper(nn.Module):
    """Frozen-feature classifier: ``linear_head(features)`` with features as in the released linear heads.

    ``layers=1``: cls token ++ mean patch token of the last block; ``layers=4``: the cls tokens of the last 4
    blocks ++ mean patch token of the last block (:mod:`dinov2.heads.classifier`). Input ``[B, 3, H, W]``, output
    logits ``[B, classes]``.
    """

    def __init__(self, *, backbone: nn.Module, linear_head: nn.Module, layers: int = 4) -> None:
        super().__init__()
        self.backbone = backbone
        self.linear_head = linear_head
        self.layers = layers

    def forward(self, x: Tensor) -> Tensor:
        blocks = backbone_blocks(self.backbone, x, self.layers)
        return self.linear_head(linear_head_input(blocks, self.layers, avgpool=True))  # [B, (layers + 1) D] -> logits


def _head_url(arch_name: str, patch_size: int, layers: int, num_register_tokens: int) -> str:
    return catalog.head_url(arch_name, "linear4" if layers == 4 else "linear", patch_size, num_register_tokens)


def _make_dinov2_linear_classification_head(
    *,
    arch_name: str = "vit_large",
    patch_size: int = 14,
    embed_dim: int = 1024,
    layers: int = 4,
    pretrained: bool = True,
    weights: Weights | str = Weights.IMAGENET1K,
    num_register_tokens: int = 0,
    **kwargs,
) -> nn.Linear:
    """``nn.Linear((1 + layers) * embed_dim, 1000)``, with the released head weights when ``pretrained``."""
    if layers not in HUB_LAYERS:
        raise ValueError(f"layers={layers} is not supported: use one of {HUB_LAYERS}")
    linear_head = nn.Linear((1 + layers) * embed_dim, _IMAGENET_CLASSES)
    if pretrained:
        resolve_weights(weights, Weights)
        url = _head_url(arch_name, patch_size, layers, num_register_tokens)
        load_strict(linear_head, read_checkpoint(url, argument="weights"), url, "linear head")
    return linear_head


def _classes(head_state: dict | None, full_state: dict | None) -> int:
    """The classes of a head file or a whole-classifier file (ImageNet's 1000 without either)."""
    reference = head_state["weight"] if head_state else (full_state or {}).get("linear_head.weight")
    return reference.shape[0] if reference is not None else _IMAGENET_CLASSES


def _load_classifier_file(path: Path | str) -> tuple[dict | None, dict | None]:
    """Split a local classifier file into (head state dict, None) or (None, whole-classifier state dict)."""
    state_dict = read_checkpoint(path, argument="weights")
    if is_linear_head_state_dict(state_dict):
        return state_dict, None
    state_dict = chunked_to_flat(strip_prefix(state_dict, "module."))
    if any(key.startswith("linear_head.") for key in state_dict):
        return None, state_dict
    keys = sorted(state_dict)[:5]
    raise ValueError(
        f"{path} is neither a linear head (keys 'weight', 'bias') nor a classifier state dict "
        f"('backbone.*', 'linear_head.*'); its first keys are {keys}"
    )


def _make_dinov2_linear_classifier(
    *,
    arch_name: str = "vit_large",
    layers: int = 4,
    pretrained: bool = True,
    weights: Weights | WeightsArg = Weights.IMAGENET1K,
    backbone_weights: WeightsArg | None = None,
    num_register_tokens: int = 0,
    interpolate_antialias: bool = False,
    interpolate_offset: float = 0.1,
    **kwargs,
) -> _LinearClassifierWrapper:
    """Backbone + linear head; see the module docstring for the accepted ``weights`` / ``backbone_weights``."""
    if layers not in HUB_LAYERS:
        raise ValueError(f"layers={layers} is not supported: use one of {HUB_LAYERS}")
    head_state = full_state = None
    source = resolve_weights(weights, Weights) if pretrained else None
    if isinstance(source, Path):
        head_state, full_state = _load_classifier_file(source)
        if full_state is not None and backbone_weights is not None:
            raise ValueError(f"{source} holds a whole classifier, backbone included: leave backbone_weights unset")
    backbone = _make_dinov2_model(
        arch_name=arch_name,
        pretrained=pretrained and full_state is None,
        weights=BackboneWeights.LVD142M if backbone_weights is None else backbone_weights,
        num_register_tokens=num_register_tokens,
        interpolate_antialias=interpolate_antialias,
        interpolate_offset=interpolate_offset,
        **kwargs,
    )
    if isinstance(source, Weights):
        linear_head = _make_dinov2_linear_classification_head(
            arch_name=arch_name, patch_size=backbone.patch_size, embed_dim=backbone.embed_dim, layers=layers,
            pretrained=True, weights=source, num_register_tokens=num_register_tokens,
        )  # fmt: skip
    else:
        linear_head = nn.Linear((1 + layers) * backbone.embed_dim, _classes(head_state, full_state))
    model = _LinearClassifierWrapper(backbone=backbone, linear_head=linear_head, layers=layers)
    if head_state is not None:
        load_strict(linear_head, head_state, source, f"the linear head for layers={layers}")
    elif full_state is not None:
        load_strict(model, full_state, source, f"{arch_name} linear classifier (layers={layers})")
    return model


def _classifier(arch_name: str, layers, pretrained, weights, backbone_weights, extra: dict, kwargs: dict):
    return _make_dinov2_linear_classifier(
        arch_name=arch_name, layers=layers, pretrained=pretrained, weights=weights,
        backbone_weights=backbone_weights, **extra, **kwargs,
    )  # fmt: skip


def dinov2_vits14_lc(*, layers=4, pretrained=True, weights=Weights.IMAGENET1K, backbone_weights=None, **kwargs):
    """Linear classifier (ImageNet-1k) on DINOv2 ViT-S/14; ``layers`` 1 or 4."""
    return _classifier("vit_small", layers, pretrained, weights, backbone_weights, {}, kwargs)


def dinov2_vitb14_lc(*, layers=4, pretrained=True, weights=Weights.IMAGENET1K, backbone_weights=None, **kwargs):
    """Linear classifier (ImageNet-1k) on DINOv2 ViT-B/14; ``layers`` 1 or 4."""
    return _classifier("vit_base", layers, pretrained, weights, backbone_weights, {}, kwargs)


def dinov2_vitl14_lc(*, layers=4, pretrained=True, weights=Weights.IMAGENET1K, backbone_weights=None, **kwargs):
    """Linear classifier (ImageNet-1k) on DINOv2 ViT-L/14; ``layers`` 1 or 4."""
    return _classifier("vit_large", layers, pretrained, weights, backbone_weights, {}, kwargs)


def dinov2_vitg14_lc(*, layers=4, pretrained=True, weights=Weights.IMAGENET1K, backbone_weights=None, **kwargs):
    """Linear classifier (ImageNet-1k) on DINOv2 ViT-g/14; ``layers`` 1 or 4."""
    extra = {"ffn_layer": "swiglufused"}
    return _classifier("vit_giant2", layers, pretrained, weights, backbone_weights, extra, kwargs)


def dinov2_vits14_reg_lc(*, layers=4, pretrained=True, weights=Weights.IMAGENET1K, backbone_weights=None, **kwargs):
    """Linear classifier (ImageNet-1k) on DINOv2 ViT-S/14 with registers; ``layers`` 1 or 4."""
    return _classifier("vit_small", layers, pretrained, weights, backbone_weights, REGISTER_SETTINGS, kwargs)


def dinov2_vitb14_reg_lc(*, layers=4, pretrained=True, weights=Weights.IMAGENET1K, backbone_weights=None, **kwargs):
    """Linear classifier (ImageNet-1k) on DINOv2 ViT-B/14 with registers; ``layers`` 1 or 4."""
    return _classifier("vit_base", layers, pretrained, weights, backbone_weights, REGISTER_SETTINGS, kwargs)


def dinov2_vitl14_reg_lc(*, layers=4, pretrained=True, weights=Weights.IMAGENET1K, backbone_weights=None, **kwargs):
    """Linear classifier (ImageNet-1k) on DINOv2 ViT-L/14 with registers; ``layers`` 1 or 4."""
    return _classifier("vit_large", layers, pretrained, weights, backbone_weights, REGISTER_SETTINGS, kwargs)


def dinov2_vitg14_reg_lc(*, layers=4, pretrained=True, weights=Weights.IMAGENET1K, backbone_weights=None, **kwargs):
    """Linear classifier (ImageNet-1k) on DINOv2 ViT-g/14 with registers; ``layers`` 1 or 4."""
    extra = {"ffn_layer": "swiglufused", **REGISTER_SETTINGS}
    return _classifier("vit_giant2", layers, pretrained, weights, backbone_weights, extra, kwargs)


# ------------------------------------------------------------------------------------------------ DINOv3
class ClassifierWeights(Enum):
    """DINOv3's name for the data of its released linear head."""

    IMAGENET1K = "IMAGENET1K"


DINOV3_LINEAR_HEAD_FILES = {"dinov3_vit7b16": "dinov3_vit7b16_imagenet1k_linear_head-90d8ed92.pth"}  # gated


def make_dinov3_linear_classifier(
    backbone_name: str,
    *,
    pretrained: bool = True,
    weights: ClassifierWeights | str | Path = ClassifierWeights.IMAGENET1K,
    backbone_weights: DINOv3Weights | str | Path = DINOv3Weights.LVD1689M,
    check_hash: bool = False,
) -> _LinearClassifierWrapper:
    """DINOv3 hub ViT ``backbone_name`` + ``nn.Linear(2 * embed_dim, classes)`` over ``[cls, mean(patches)]`` of its
    ``forward_features``, as released (``layers=1`` of :class:`_LinearClassifierWrapper`).

    ``weights``: the released head (gated: needs its file), or a local path / URL of a head file (``weight``,
    ``bias``: the released file, or a head our linear evaluation saved) or of a whole classifier (``backbone.*``,
    ``linear_head.*``, which then needs no ``backbone_weights``); loaded whatever ``pretrained`` says."""
    file_name, released = DINOV3_LINEAR_HEAD_FILES.get(backbone_name), ClassifierWeights.IMAGENET1K
    source = head_weights_source(
        f"{backbone_name}_lc", weights, released, file_name, pretrained=pretrained, check_hash=check_hash
    )
    head_state, full_state = (None, None) if source is None else _load_classifier_file(source)
    make = getattr(dinov3_backbones, backbone_name)
    backbone = make(pretrained=pretrained and full_state is None, weights=backbone_weights, check_hash=check_hash)
    linear_head = nn.Linear(2 * backbone.embed_dim, _classes(head_state, full_state))
    model = _LinearClassifierWrapper(backbone=backbone, linear_head=linear_head, layers=1)
    if head_state is not None:
        load_strict(model.linear_head, head_state, weights, f"{backbone_name} linear head")
    elif full_state is not None:
        load_strict(model, full_state, weights, f"{backbone_name} linear classifier")
    return model


def dinov3_vit7b16_lc(
    *,
    pretrained: bool = True,
    weights: ClassifierWeights | str = ClassifierWeights.IMAGENET1K,
    backbone_weights: DINOv3Weights | str = DINOv3Weights.LVD1689M,
    check_hash: bool = False,
    **kwargs,
) -> _LinearClassifierWrapper:
    """Linear classifier (ImageNet-1k) on DINOv3 ViT-7B/16 pretrained on LVD-1689M, as released: the release gates
    both files, so ``pretrained=True`` needs ``backbone_weights=`` (the ``dinov3_vit7b16`` file) and ``weights=``
    (``dinov3_vit7b16_imagenet1k_linear_head-90d8ed92.pth``); see :func:`make_dinov3_linear_classifier`.
    ``kwargs``: the release's ``hash`` of a differently named head file is not needed (files are named here)."""
    kwargs.pop("hash", None)
    if kwargs:
        raise TypeError(f"dinov3_vit7b16_lc got unexpected keyword arguments {sorted(kwargs)}")
    return make_dinov3_linear_classifier(
        "dinov3_vit7b16",
        pretrained=pretrained,
        weights=weights,
        backbone_weights=backbone_weights,
        check_hash=check_hash,
    )
