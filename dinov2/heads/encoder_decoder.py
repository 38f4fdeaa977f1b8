"""What the depth and segmentation models share: a backbone tapped at some blocks, on the centre-padded image."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from dinov2.layers.center_padding import CenterPadding

__all__ = ["EncoderDecoder"]


class EncoderDecoder(nn.Module):
    """``backbone`` (a DINOv2 ViT) tapped at blocks ``out_index`` + ``decode_head`` (which has ``align_corners``).

    The image is centre-padded to a multiple of the patch size for the backbone only. Submodules are registered
    in the released order (``backbone``, ``decode_head``): the state-dict contract.
    """

    def __init__(self, backbone: nn.Module, decode_head: nn.Module, out_index: Sequence[int]) -> None:
        super().__init__()
        self.backbone = backbone
        self.decode_head = decode_head
        self.out_index = [int(i) for i in out_index]
        self.center_padding = CenterPadding(backbone.patch_size)
        self.align_corners = decode_head.align_corners

    def tapped_blocks(self, img: Tensor, **options) -> tuple:
        """``get_intermediate_layers`` of the tapped blocks on the centre-padded image, as ``[B, C, h, w]`` maps;
        ``options`` (``return_class_token``, ``norm``) pass through."""
        return self.backbone.get_intermediate_layers(
            self.center_padding(img), n=self.out_index, reshape=True, **options
        )
