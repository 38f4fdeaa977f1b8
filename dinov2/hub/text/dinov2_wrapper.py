"""The release's ``dinov2.hub.text.dinov2_wrapper``: its adapter of a DINOv2 ViT for dino.txt's vision tower."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from dinov2.models.intermediate import pack_outputs

__all__ = ["DINOv2Wrapper"]


class DINOv2Wrapper(nn.Module):
    """A DINOv2 ViT (``model.*`` keys) with the release's two changes for dino.txt: ``forward(img, is_training=True)``
    adds the patch grid ``h`` / ``w`` to the feature dict, and ``get_intermediate_layers`` can also return the
    register tokens (``return_register_tokens``). The project's dino.txt reads backbones directly
    (:mod:`dinov2.text.backbone_tokens`); this is for code written against the release."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.embed_dim = model.embed_dim
        self.num_heads = model.num_heads
        self.num_register_tokens = model.num_register_tokens

    def forward(self, img: Tensor, is_training: bool) -> dict:
        """The training feature dict of ``img`` ``[B, 3, H, W]`` plus ``h = H // p`` and ``w = W // p``."""
        if not is_training:
            raise ValueError("DINOv2Wrapper gives the feature dict only, as released: call it with is_training=True")
        out = self.model(img, is_training=True)
        out["h"], out["w"] = img.shape[-2] // self.model.patch_size, img.shape[-1] // self.model.patch_size
        return out

    def get_intermediate_layers(
        self,
        x: Tensor,
        n: int | Sequence[int] = 1,
        reshape: bool = False,
        return_class_token: bool = False,
        return_register_tokens: bool = False,
        norm: bool = True,
    ) -> tuple:
        """The ViT's ``get_intermediate_layers``, whose items also carry the register tokens ``[B, R, D]`` (after
        the class token when both are asked for) with ``return_register_tokens``."""
        outputs = self.model._block_outputs(x, n)  # [B, 1 + R + HW, D] per block
        if norm:
            outputs = [self.model.norm(out) for out in outputs]
        prefix = 1 + self.num_register_tokens
        grid = (x.shape[-2] // self.model.patch_size, x.shape[-1] // self.model.patch_size)
        extras = ([[out[:, 0] for out in outputs]] if return_class_token else []) + (
            [[out[:, 1:prefix] for out in outputs]] if return_register_tokens else []
        )
        return pack_outputs([out[:, prefix:] for out in outputs], [grid] * len(outputs) if reshape else None, *extras)
