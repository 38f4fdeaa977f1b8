"""The frozen vision backbone as dino.txt reads it: CLS, register / storage tokens and patch tokens of a block.

:func:`backbone_tokens` gives every token backbone of the project (the DINOv2 ViT, with or without registers, and the
DINOv3 ViT with storage tokens) the call the released vision tower makes on its wrapped backbone,
``get_intermediate_layers(images, n, return_class_token=True, return_register_tokens=True)``, without wrapping it:
the backbone stays a direct child (``visual_model.backbone.*`` keys, as in the DINOv3 release).
"""

from __future__ import annotations

from torch import Tensor, nn

from dinov2.models.families import family_for_model

__all__ = ["backbone_tokens", "check_token_backbone", "num_register_tokens"]


def num_register_tokens(backbone: nn.Module) -> int:
    """Tokens between the CLS token and the patches: DINOv2 registers or DINOv3 storage tokens (its family's count,
    which includes the CLS token)."""
    return family_for_model(backbone).num_extra_tokens(backbone) - 1


def check_token_backbone(backbone: nn.Module) -> None:
    """ValueError unless ``backbone`` is a ViT that dino.txt can read (``embed_dim``, ``num_heads``, tokens)."""
    for name in ("embed_dim", "num_heads", "patch_size", "get_intermediate_layers"):
        if not hasattr(backbone, name):
            raise ValueError(
                f"dino.txt needs a token backbone (a ViT with {name!r}), got {type(backbone).__name__}; "
                "pass a DINOv2 or DINOv3 ViT (e.g. the hub backbone dinov2_vitl14_reg)"
            )


def backbone_tokens(backbone: nn.Module, images: Tensor, n: int) -> list[tuple[Tensor, Tensor, Tensor]]:
    """``(patches [B, HW, D], cls [B, D], registers [B, R, D])`` of the last ``n`` blocks, final norm applied."""
    if hasattr(backbone, "n_storage_tokens"):  # DINOv3: storage tokens are its "extra" tokens
        outputs = backbone.get_intermediate_layers(images, n=n, return_class_token=True, return_extra_tokens=True)
        return [(patches, cls, extra) for patches, cls, extra in outputs]
    # DINOv2: its public call drops the registers, so read the block outputs with every token and norm them
    prefix = 1 + int(backbone.num_register_tokens)  # the DINOv2 ViT's own count (no family lookup per step)
    outputs = [backbone.norm(out) for out in backbone._block_outputs(images, n)]  # [B, 1 + R + HW, D] each
    return [(out[:, prefix:], out[:, 0], out[:, 1:prefix]) for out in outputs]
