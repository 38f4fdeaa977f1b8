"""DINOv2 vision transformer (Oquab et al., 2024) with registers (Darcet et al., 2024).

Token layout ``[cls, register_1..R, patch_1..N]``; position embeddings cover cls and patches only. State-dict
keys, constructor arguments and numerics follow the released ``DinoVisionTransformer``. Differences, all
deliberate: inputs whose sides are not multiples of the patch size are cropped (top-left) instead of
rejected; bad inputs raise ``ValueError``; the multi-crop list forward runs without xformers
(``use_xformers`` opts into it on CUDA).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dinov2.layers import MemEffAttention, Mlp, NestedTensorBlock, PatchEmbed, SwiGLUFFNFused
from dinov2.layers.block import Block
from dinov2.layers.packing import Groups, pack, unpack
from dinov2.models.intermediate import IntermediateLayersMixin
from dinov2.models.pos_embed import exportable_pos_encoding, is_exporting
from dinov2.utils.registry import Registry

logger = logging.getLogger(__name__)


def _identity_ffn(*args, **kwargs) -> nn.Module:
    return nn.Identity()


FFN_LAYERS: dict[str, Callable[..., nn.Module]] = {
    "mlp": Mlp,
    "swiglu": SwiGLUFFNFused,  # the released code maps both SwiGLU names to the fused layer
    "swiglufused": SwiGLUFFNFused,
    "identity": _identity_ffn,
}


def named_apply(
    fn: Callable[..., None], module: nn.Module, name: str = "", depth_first: bool = True, include_root: bool = False
) -> nn.Module:
    """Call ``fn(module=m, name=qualified_name)`` on every sub-module (released helper, timm's semantics).

    ``depth_first`` visits children before their parent; ``include_root`` also visits ``module`` itself.
    """
    if include_root and not depth_first:
        fn(module=module, name=name)
    for child_name, child in module.named_children():
        qualified = f"{name}.{child_name}" if name else child_name
        named_apply(fn, child, name=qualified, depth_first=depth_first, include_root=True)
    if include_root and depth_first:
        fn(module=module, name=name)
    return module


def init_weights_vit_timm(module: nn.Module, name: str = "") -> None:
    """The released (timm) initialisation of one module: Linear weights trunc-normal(0.02), biases 0."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class BlockChunk(nn.ModuleList):
    """A group of consecutive blocks (one FSDP unit); leading ``Identity`` entries keep global block indices."""

    def forward(
        self, x: Tensor | list[Tensor], first_token_only: bool = False, groups: Groups | None = None
    ) -> Tensor | list[Tensor]:
        blocks = [block for block in self if not isinstance(block, nn.Identity)]
        if groups is not None:  # packed tokens, see Block.forward
            for block in blocks:
                x = block(x, groups=groups)
            return x
        for i, block in enumerate(blocks):
            x = block(x, first_token_only=True) if first_token_only and i == len(blocks) - 1 else block(x)
        return x


def _chunk_blocks(blocks: list[nn.Module], block_chunks: int) -> nn.ModuleList:
    """``depth // block_chunks`` blocks per chunk, ``Identity``-padded so keys read ``blocks.<chunk>.<index>``."""
    chunk_size = len(blocks) // block_chunks
    if chunk_size == 0:
        raise ValueError(f"block_chunks={block_chunks} exceeds depth={len(blocks)}; use at most depth chunks or 0")
    return nn.ModuleList(
        BlockChunk([nn.Identity()] * start + blocks[start : start + chunk_size])
        for start in range(0, len(blocks), chunk_size)
    )


class DinoVisionTransformer(IntermediateLayersMixin, nn.Module):
    """ViT backbone: images ``[B, C, H, W]`` -> normalised cls / register / patch tokens of width ``embed_dim``.

    Arguments follow the released constructor; ``init_values`` None or 0 means no layer-scale,
    ``block_chunks`` > 0 groups blocks into :class:`BlockChunk` s. ``use_xformers`` (not in the release)
    runs attention with xformers on CUDA inputs; the default is torch's ``scaled_dot_product_attention``.
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        ffn_bias: bool = True,
        proj_bias: bool = True,
        drop_path_rate: float = 0.0,
        drop_path_uniform: bool = False,
        init_values: float | None = None,
        embed_layer: Callable[..., nn.Module] = PatchEmbed,
        act_layer: Callable[..., nn.Module] = nn.GELU,
        block_fn: Callable[..., nn.Module] = Block,
        ffn_layer: str = "mlp",
        block_chunks: int = 1,
        num_register_tokens: int = 0,
        interpolate_antialias: bool = False,
        interpolate_offset: float = 0.1,
        use_xformers: bool = False,
    ) -> None:
        super().__init__()
        if ffn_layer not in FFN_LAYERS:
            raise ValueError(f"unknown ffn_layer {ffn_layer!r}; valid: {sorted(FFN_LAYERS)}")
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.num_features = self.embed_dim = embed_dim
        self.num_tokens = 1
        self.n_blocks = depth
        self.num_heads = num_heads
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.num_register_tokens = num_register_tokens
        self.interpolate_antialias = interpolate_antialias
        self.interpolate_offset = interpolate_offset
        self.init_values = init_values

        self.patch_embed = embed_layer(img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim)
        num_patches = self.patch_embed.num_patches
        # Parameter order fixes the state-dict order of the release: cls, pos, registers, mask.
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + self.num_tokens, embed_dim))
        self.register_tokens = (
            nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim)) if num_register_tokens else None
        )
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))

        rates = (
            [drop_path_rate] * depth
            if drop_path_uniform
            else torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()
        )
        extra = {"use_xformers": True} if use_xformers else {}
        blocks = [
            block_fn(
                dim=embed_dim,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                proj_bias=proj_bias,
                ffn_bias=ffn_bias,
                drop_path=rates[i],
                norm_layer=norm_layer,
                act_layer=act_layer,
                ffn_layer=FFN_LAYERS[ffn_layer],
                init_values=init_values,
                **extra,
            )
            for i in range(depth)
        ]
        self.chunked_blocks = block_chunks > 0
        self.blocks = _chunk_blocks(blocks, block_chunks) if self.chunked_blocks else nn.ModuleList(blocks)
        self.norm = norm_layer(embed_dim)
        self.head = nn.Identity()
        self.cls_only_last_block = True  # see forward()
        self.init_weights()

    # ----------------------------------------------------------------------------------------- init
    def init_weights(self) -> None:
        """Released initialisation; also fills every parameter after ``to_empty()`` from the meta device.

        pos_embed trunc-normal(0.02); cls and register tokens normal(1e-6); mask_token 0; Linear weights
        trunc-normal(0.02), biases 0; LayerNorm, LayerScale and the patch convolution as constructed.
        """
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        if self.register_tokens is not None:
            nn.init.normal_(self.register_tokens, std=1e-6)
        nn.init.zeros_(self.mask_token)

    # --------------------------------------------------------------------------------------- tokens
    def interpolate_pos_encoding(self, x: Tensor, h: int, w: int) -> Tensor:
        """Position embeddings ``[1, 1 + N, D]`` for tokens ``x`` ``[B, 1 + N, D]`` of an ``h x w`` image.

        The stored ``M x M`` grid is used as is for a square input with ``N == M * M``; otherwise it is
        resized bicubically in float32 to ``(h // p, w // p)``, by scale factors ``(g + offset) / M`` when
        ``interpolate_offset`` > 0 (the released work-around), else by output size.
        """
        if is_exporting():  # the same numbers without shape guards, see dinov2/models/pos_embed.py
            args = (self.patch_size, self.interpolate_offset, self.interpolate_antialias)
            return exportable_pos_encoding(self.pos_embed, x, h, w, *args)
        npatch = x.shape[1] - 1
        stored = self.pos_embed.shape[1] - 1
        if npatch == stored and h == w:
            return self.pos_embed
        dim = x.shape[-1]
        grid_h, grid_w = h // self.patch_size, w // self.patch_size
        side = int(math.sqrt(stored))
        if side * side != stored:
            raise ValueError(f"pos_embed holds {stored} patch positions, not a square grid")
        pos = self.pos_embed.float()
        patch_pos = pos[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)  # [1, D, M, M]
        if self.interpolate_offset:
            scale = ((grid_h + self.interpolate_offset) / side, (grid_w + self.interpolate_offset) / side)
            resize = {"scale_factor": scale}
        else:
            resize = {"size": (grid_h, grid_w)}
        patch_pos = F.interpolate(patch_pos, mode="bicubic", antialias=self.interpolate_antialias, **resize)
        if patch_pos.shape[-2:] != (grid_h, grid_w):
            raise RuntimeError(f"resized pos_embed to {tuple(patch_pos.shape[-2:])}, expected {(grid_h, grid_w)}")
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, dim)  # [1, N, D]
        return torch.cat((pos[:, :1], patch_pos), dim=1).to(x.dtype)

    def _check_input(self, x: Tensor, masks: Tensor | None) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"expected an image tensor [B, C, H, W], got {type(x).__name__}")
        if x.ndim != 4:
            hint = "; add a batch dimension with x.unsqueeze(0)" if x.ndim == 3 else ""
            raise ValueError(f"expected images of shape [B, C, H, W], got shape {tuple(x.shape)}{hint}")
        if x.shape[1] != self.in_chans:
            raise ValueError(f"expected {self.in_chans} input channels, got {x.shape[1]} (shape {tuple(x.shape)})")
        if not x.is_floating_point():
            raise ValueError(f"expected a floating-point image tensor, got {x.dtype}: convert with x.float()")
        p = self.patch_size
        if x.shape[2] < p or x.shape[3] < p:
            raise ValueError(f"image {x.shape[2]}x{x.shape[3]} is smaller than one {p}x{p} patch")
        if masks is None:
            return
        expected = (x.shape[0], (x.shape[2] // p) * (x.shape[3] // p))
        if not isinstance(masks, Tensor) or masks.dtype != torch.bool or tuple(masks.shape) != expected:
            got = f"{masks.dtype} {tuple(masks.shape)}" if isinstance(masks, Tensor) else type(masks).__name__
            raise ValueError(f"expected masks as a bool tensor of shape [B, N] = {list(expected)}, got {got}")

    def prepare_tokens_with_masks(self, x: Tensor, masks: Tensor | None = None) -> Tensor:
        """Images ``[B, C, H, W]`` -> tokens ``[B, 1 + R + N, D]`` (mask tokens substituted, pos-embed added)."""
        self._check_input(x, masks)
        batch, _, h, w = x.shape
        h, w = h - h % self.patch_size, w - w % self.patch_size  # PatchEmbed crops to these sides
        x = self.patch_embed(x)  # [B, N, D]
        if masks is not None:
            x = torch.where(masks.unsqueeze(-1), self.mask_token.to(x.dtype).unsqueeze(0), x)
        x = torch.cat((self.cls_token.expand(batch, -1, -1), x), dim=1)  # [B, 1 + N, D]
        x = x + self.interpolate_pos_encoding(x, h, w)
        if self.register_tokens is not None:
            x = torch.cat((x[:, :1], self.register_tokens.expand(batch, -1, -1), x[:, 1:]), dim=1)
        return x  # [B, 1 + R + N, D]

    # -------------------------------------------------------------------------------------- forward
    def _output_dict(self, x_prenorm: Tensor, masks: Tensor | None) -> dict[str, Tensor | None]:
        x_norm = self.norm(x_prenorm)
        r = self.num_register_tokens
        return {
            "x_norm_clstoken": x_norm[:, 0],  # [B, D]
            "x_norm_regtokens": x_norm[:, 1 : r + 1],  # [B, R, D]
            "x_norm_patchtokens": x_norm[:, r + 1 :],  # [B, N, D]
            "x_prenorm": x_prenorm,  # [B, 1 + R + N, D]
            "masks": masks,
        }

    def forward_features_list(self, x_list: Sequence[Tensor], masks_list: Sequence[Tensor | None] | None = None):
        """Multi-crop forward: crops of different sizes go through each block together (packed).

        Returns one ``forward_features`` dict per crop tensor; images never attend to each other.
        """
        masks_list = [None] * len(x_list) if masks_list is None else list(masks_list)
        if len(masks_list) != len(x_list):
            raise ValueError(f"got {len(x_list)} crop tensors but {len(masks_list)} masks; pass one (or None) per crop")
        tokens = [self.prepare_tokens_with_masks(x, m) for x, m in zip(x_list, masks_list)]
        x, groups = pack(tokens)  # [T, D], packed once for all blocks
        for block in self.blocks:
            x = block(x, groups=groups)
        # Fresh tensors, not views of the packed tokens: callers (and a sharded root module, whose outputs get
        # backward hooks) may then use them freely; the copy is small next to the blocks' work.
        return [
            {k: v if k == "masks" or v is None else v.clone() for k, v in self._output_dict(t, m).items()}
            for t, m in zip(unpack(x, groups), masks_list)
        ]

    def forward_features(self, x: Tensor | Sequence[Tensor], masks: Tensor | Sequence[Tensor | None] | None = None):
        """Features of images ``[B, C, H, W]`` (optionally masked, ``masks`` bool ``[B, N]``) as a dict.

        Keys: ``x_norm_clstoken`` ``[B, D]``, ``x_norm_regtokens`` ``[B, R, D]``, ``x_norm_patchtokens``
        ``[B, N, D]``, ``x_prenorm`` ``[B, 1 + R + N, D]``, ``masks``. A list of crop tensors (with a list of
        masks) gives a list of such dicts, see :meth:`forward_features_list`.
        """
        if isinstance(x, (list, tuple)):
            return self.forward_features_list(x, masks)
        x = self.prepare_tokens_with_masks(x, masks)
        for block in self.blocks:
            x = block(x)
        return self._output_dict(x, masks)

    def forward(self, *args, is_training: bool = False, **kwargs):
        """``head(x_norm_clstoken)`` ``[B, D]``; with ``is_training=True`` the ``forward_features`` output.

        For one image tensor in eval mode the last block computes the cls token only (``cls_only_last_block``,
        on by default; the outputs equal ``forward_features``'s up to float rounding, the release ran the
        last block on every token). Set ``model.cls_only_last_block = False`` for the release's arithmetic.
        """
        if not is_training and self._can_skip_patch_outputs(*args, **kwargs):
            return self.head(self._forward_cls_token(*args, **kwargs))
        ret = self.forward_features(*args, **kwargs)
        if is_training:
            return ret
        if isinstance(ret, list):
            return [self.head(r["x_norm_clstoken"]) for r in ret]
        return self.head(ret["x_norm_clstoken"])

    def _can_skip_patch_outputs(self, x=None, masks=None) -> bool:
        last = self.blocks[-1] if len(self.blocks) else None
        if isinstance(last, BlockChunk):
            last = last[-1]
        # not for a list, in training, for a foreign block_fn, or with blocks hidden in FSDP(1) wrappers
        return self.cls_only_last_block and not self.training and isinstance(x, Tensor) and isinstance(last, Block)

    def _forward_cls_token(self, x: Tensor, masks: Tensor | None = None) -> Tensor:
        """Normalised cls token ``[B, D]`` with the last block computing token 0 only."""
        x = self.prepare_tokens_with_masks(x, masks)
        for block in self.blocks[:-1]:
            x = block(x)
        x = self.blocks[-1](x, first_token_only=True)  # [B, 1, D]
        return self.norm(x[:, 0])

    # ------------------------------------------------------------------------- intermediate layers
    def _flat_blocks(self) -> list[nn.Module]:
        if not self.chunked_blocks:
            return list(self.blocks)
        return [b for chunk in self.blocks for b in chunk if not isinstance(b, nn.Identity)]

    def _block_outputs(self, x: Tensor, n: int | Sequence[int]) -> list[Tensor]:
        depth = self.n_blocks
        if isinstance(n, int):
            if not 0 < n <= depth:
                raise ValueError(f"n={n} last blocks requested but the model has {depth} blocks")
            wanted = list(range(depth - n, depth))
        else:
            bad = [i for i in n if not -depth <= i < depth]
            if bad:
                raise ValueError(f"block indices {bad} out of range for a model with {depth} blocks")
            wanted = [i % depth for i in n]
        x = self.prepare_tokens_with_masks(x)
        outputs = {}
        for i, block in enumerate(self._flat_blocks()[: max(wanted) + 1]):
            x = block(x)
            if i in wanted:
                outputs[i] = x  # [B, 1 + R + N, D]
        return [outputs[i] for i in wanted]

    def _intermediate_outputs(
        self, x: Tensor, n: int | Sequence[int], norm: bool
    ) -> tuple[list[Tensor], list[Tensor], list[tuple[int, int]]]:
        """Patch tokens ``[B, N, D]``, class tokens ``[B, D]`` and patch grids of the blocks ``n`` names (negative
        indices count from the end; the release accepted only non-negative ones)."""
        outputs = self._block_outputs(x, n)
        if norm:
            outputs = [self.norm(out) for out in outputs]
        grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        patches = [out[:, 1 + self.num_register_tokens :] for out in outputs]
        return patches, [out[:, 0] for out in outputs], [grid] * len(outputs)


def _vit(embed_dim: int, depth: int, num_heads: int, patch_size: int, num_register_tokens: int, **kwargs):
    kwargs.setdefault("block_fn", partial(NestedTensorBlock, attn_class=MemEffAttention))
    return DinoVisionTransformer(
        patch_size=patch_size,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=4,
        num_register_tokens=num_register_tokens,
        **kwargs,
    )


def vit_tiny(patch_size: int = 16, num_register_tokens: int = 0, **kwargs) -> DinoVisionTransformer:
    """ViT-Ti: 192 dim, 12 blocks, 3 heads (not a released DINOv2 model; for CPU demos and quick experiments)."""
    return _vit(192, 12, 3, patch_size, num_register_tokens, **kwargs)


def vit_pico(patch_size: int = 16, num_register_tokens: int = 0, **kwargs) -> DinoVisionTransformer:
    """96 dim, 6 blocks, 3 heads, ~0.7M parameters: the distillation demo's student (``python -m dinov2.demo
    distill``), smaller than its ViT-Ti teacher. Not a released model."""
    return _vit(96, 6, 3, patch_size, num_register_tokens, **kwargs)


def vit_small(patch_size: int = 16, num_register_tokens: int = 0, **kwargs) -> DinoVisionTransformer:
    """ViT-S: 384 dim, 12 blocks, 6 heads."""
    return _vit(384, 12, 6, patch_size, num_register_tokens, **kwargs)


def vit_base(patch_size: int = 16, num_register_tokens: int = 0, **kwargs) -> DinoVisionTransformer:
    """ViT-B: 768 dim, 12 blocks, 12 heads."""
    return _vit(768, 12, 12, patch_size, num_register_tokens, **kwargs)


def vit_large(patch_size: int = 16, num_register_tokens: int = 0, **kwargs) -> DinoVisionTransformer:
    """ViT-L: 1024 dim, 24 blocks, 16 heads."""
    return _vit(1024, 24, 16, patch_size, num_register_tokens, **kwargs)


def vit_giant2(patch_size: int = 16, num_register_tokens: int = 0, **kwargs) -> DinoVisionTransformer:
    """ViT-g: 1536 dim, 40 blocks, 24 heads (the released ViT-g uses ``ffn_layer="swiglufused"``)."""
    return _vit(1536, 40, 24, patch_size, num_register_tokens, **kwargs)


ARCHS: Registry[Callable[..., nn.Module]] = Registry(
    "arch",
    {
        "vit_pico": vit_pico,
        "vit_tiny": vit_tiny,
        "vit_small": vit_small,
        "vit_base": vit_base,
        "vit_large": vit_large,
        "vit_giant2": vit_giant2,
    },
)


def register_arch(name: str, fn: Callable[..., nn.Module], *, exist_ok: bool = False) -> None:
    """Add a DINOv2 ViT arch (``student.arch`` value) to :data:`ARCHS`."""
    ARCHS.register(name, fn, exist_ok=exist_ok)


def registered_arch(name: str, fn: Callable[..., nn.Module]) -> contextlib.AbstractContextManager:
    """Context manager: ``name`` is in :data:`ARCHS` inside the block only (restored even when the body raises)."""
    return ARCHS.registered(name, fn)
