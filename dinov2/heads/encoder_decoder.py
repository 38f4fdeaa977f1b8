"""What the depth and segmentation models share: a backbone tapped at some blocks, on the centre-padded image."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from dinov2.layers.center_padding import CenterPadding
from dinov2.models.families import family_for_model

__all__ = ["EncoderDecoder", "tapped_widths"]


def tapped_widths(backbone: nn.Module, out_index: Sequence[int]) -> list[int]:
    """Channels of each tapped output: ``embed_dim`` for a ViT, the stage widths (``embed_dims``) for a ConvNeXt."""
    widths = getattr(backbone, "embed_dims", None)
    return [int(widths[i]) for i in out_index] if widths is not None else [int(backbone.embed_dim)] * len(out_index)


class EncoderDecoder(nn.Module):
    """``backbone`` (a DINOv2 / DINOv3 ViT, or a DINOv3 ConvNeXt at its stages) tapped at blocks ``out_index`` +
    ``decode_head`` (which has ``align_corners``).

    The image is centre-padded to a multiple of the family's patch size for the backbone only. Submodules are registered
    in the released order (``backbone``, ``decode_head``): the state-dict contract.
    """

    def __init__(self, backbone: nn.Module, decode_head: nn.Module, out_index: Sequence[int]) -> None:
        super().__init__()
        self.backbone = backbone
        self.decode_head = decode_head
        self.out_index = [int(i) for i in out_index]
        # the pixels per patch token are a fact of the backbone's family (32 for a DINOv3 ConvNeXt without patch_size)
        self.center_padding = CenterPadding(family_for_model(backbone).patch_size(backbone))
        self.align_corners = decode_head.align_corners

    def tapped_blocks(self, img: Tensor, **options) -> tuple:
        """``get_intermediate_layers`` of the tapped blocks on the centre-padded image, as ``[B, C, h, w]`` maps;
        ``options`` (``return_class_token``, ``norm``) pass through."""
        return self.backbone.get_intermediate_layers(
            self.center_padding(img), n=self.out_index, reshape=True, **options
        )
