"""Building blocks of the DINOv2 vision transformer (one block per file)."""

from dinov2.layers.attention import Attention, CausalSelfAttention, MemEffAttention
from dinov2.layers.block import (
    Block,
    CausalAttentionBlock,
    CausalSelfAttentionBlock,
    NestedTensorBlock,
    drop_add_residual_stochastic_depth,
    drop_add_residual_stochastic_depth_packed,
)
from dinov2.layers.center_padding import CenterPadding
from dinov2.layers.convnext_block import ConvNeXtBlock, LayerNorm2d
from dinov2.layers.dino_head import DINOHead
from dinov2.layers.drop_path import DropPath, drop_path
from dinov2.layers.layer_scale import LayerScale
from dinov2.layers.mlp import Mlp
from dinov2.layers.ms_deform_attn import MSDeformAttn
from dinov2.layers.patch_embed import PatchEmbed
from dinov2.layers.rms_norm import RMSNorm
from dinov2.layers.rope import RopePositionEmbedding
from dinov2.layers.rope_attention import LinearKMaskedBias, RopeAttention, RopeBlock
from dinov2.layers.swiglu_ffn import SwiGLUFFN, SwiGLUFFNAligned, SwiGLUFFNFused, SwiGLUFFNSplit

__all__ = [
    "Attention",
    "Block",
    "CausalAttentionBlock",
    "CenterPadding",
    "DINOHead",
    "DropPath",
    "LayerScale",
    "MemEffAttention",
    "Mlp",
    "NestedTensorBlock",
    "PatchEmbed",
    "SwiGLUFFN",
    "SwiGLUFFNAligned",
    "SwiGLUFFNFused",
    "drop_add_residual_stochastic_depth",
    "drop_add_residual_stochastic_depth_packed",
    "drop_path",
    # DINOv3
    "CausalSelfAttention",
    "CausalSelfAttentionBlock",
    "ConvNeXtBlock",
    "LayerNorm2d",
    "LinearKMaskedBias",
    "MSDeformAttn",
    "RMSNorm",
    "RopeAttention",
    "RopeBlock",
    "RopePositionEmbedding",
    "SwiGLUFFNSplit",
]
