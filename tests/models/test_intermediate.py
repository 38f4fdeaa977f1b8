"""The shared ``get_intermediate_layers`` pieces: the released ``n`` argument, output packing, one method for the
DINOv2 ViT and the DINOv3 ConvNeXt."""

from __future__ import annotations

import torch

from dinov2.models.convnext import ConvNeXt
from dinov2.models.intermediate import IntermediateLayersMixin, last_or_listed, pack_outputs
from dinov2.models.vision_transformer import DinoVisionTransformer


def test_n_names_the_last_blocks_or_the_listed_ones():
    assert last_or_listed(2, 5) == [3, 4]
    assert last_or_listed([4, 0], 5) == [4, 0]  # as given: order kept


def test_pack_outputs_reshapes_to_maps_and_zips_the_extras():
    patches = [torch.arange(2 * 6 * 3.0).reshape(2, 6, 3)]  # [B, hw, D] on a 2 x 3 grid
    (maps,) = pack_outputs(patches, [(2, 3)])
    assert maps.shape == (2, 3, 2, 3) and maps.is_contiguous()
    assert torch.equal(maps[1, 2, 1, 0], patches[0][1, 3, 2])  # token (row 1, col 0) = index 3
    cls = [torch.ones(2, 3)]
    ((tokens, token),) = pack_outputs(patches, None, cls)
    assert tokens is patches[0] and token is cls[0]
    assert pack_outputs(patches, None) == (patches[0],)


def test_the_vit_and_the_convnext_share_the_released_method():
    assert DinoVisionTransformer.get_intermediate_layers is IntermediateLayersMixin.get_intermediate_layers
    assert ConvNeXt.get_intermediate_layers is IntermediateLayersMixin.get_intermediate_layers
