"""The linear-classifier head format of the hub ``_lc`` models and of linear evaluation (SPEC.md §6).

A head is ``nn.Linear((n_blocks + 1) * D, classes)`` saved as ``{"weight", "bias"}``
(``dinov2_vit*14[_reg4]_linear[4]_head.pth``). Its input, built by :func:`linear_head_input` only:

- the class tokens of the last ``n_blocks`` blocks, oldest first, ``[B, n_blocks * D]``,
- followed (``avgpool``) by the mean of the last block's patch tokens, ``[B, D]``.

The hub ``_lc`` models have ``n_blocks = layers`` in {1, 4} and ``avgpool``; the linear-evaluation grid also
trains ``avgpool=False`` and other block counts, which have no hub layout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "HUB_LAYERS",
    "linear_head_input",
    "hub_head_layers",
    "backbone_blocks",
    "is_linear_head_state_dict",
]

#: ``layers`` values of the released ``_lc`` heads.
HUB_LAYERS = (1, 4)

# [(patch_tokens [B, N, D], cls_token [B, D]), ...] oldest block first
Blocks = Sequence[tuple[Tensor, Tensor]]


def linear_head_input(blocks: Blocks, n_blocks: int, avgpool: bool = True) -> Tensor:
    """Head input from per-block ``(patch tokens [B, N, D], class token [B, D])`` pairs, oldest block first.

    Returns ``[B, (n_blocks + avgpool) * D]`` in the tokens' dtype: the class tokens of the last ``n_blocks``
    blocks, then the mean patch token of the last block when ``avgpool``.
    """
    last = list(blocks)[-n_blocks:]
    parts = [cls_token for _, cls_token in last]
    if avgpool:
        parts.append(last[-1][0].mean(dim=1))  # [B, D]
    return torch.cat(parts, dim=-1)


def hub_head_layers(n_blocks: int, avgpool: bool) -> int | None:
    """``layers`` of the hub head with this input (1 or 4), or None when the input has no hub layout."""
    return n_blocks if avgpool and n_blocks in HUB_LAYERS else None


def backbone_blocks(backbone: nn.Module, images: Tensor, layers: int) -> Blocks:
    """The pairs a hub ``_lc`` head reads, computed as the release does.

    ``layers=1``: ``forward_features`` (normed class and patch tokens of the last block); otherwise
    ``get_intermediate_layers(images, n=layers, return_class_token=True)`` (normed, oldest first).
    """
    if layers == 1:
        features = backbone.forward_features(images)
        return [(features["x_norm_patchtokens"], features["x_norm_clstoken"])]
    return backbone.get_intermediate_layers(images, n=layers, return_class_token=True)


def is_linear_head_state_dict(state_dict: Mapping[str, object]) -> bool:
    """True for a bare head file (``{"weight", "bias"}``), as released and as saved by linear evaluation."""
    return set(state_dict) == {"weight", "bias"}
