"""The DINOv3 vision transformer: RoPE instead of a learned position embedding, storage (register) tokens.

Sequence ``[CLS, storage_0..n-1, patches]``. In training with RoPE coordinate augmentations each block draws its own
table, as released; otherwise the table is the same for every block and one forward computes it once. State-dict keys
equal the release's.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from dinov2.layers.layer_scale import LayerScale
from dinov2.layers.mlp import Mlp
from dinov2.layers.patch_embed import PatchEmbed
from dinov2.layers.rms_norm import RMSNorm
from dinov2.layers.rope import RopePositionEmbedding
from dinov2.layers.rope_attention import RopeBlock
from dinov2.layers.swiglu_ffn import SwiGLUFFNSplit
from dinov2.models.intermediate import last_or_listed, pack_outputs
from dinov2.utils.registry import Registry, named

NORM_LAYERS: dict[str, Callable[[int], nn.Module]] = {
    "layernorm": partial(nn.LayerNorm, eps=1e-6),
    "layernormbf16": partial(nn.LayerNorm, eps=1e-5),
    "rmsnorm": RMSNorm,
}
FFN_LAYERS: dict[str, Callable[..., nn.Module]] = {
    "mlp": Mlp,
    "swiglu": SwiGLUFFNSplit,
    "swiglu32": partial(SwiGLUFFNSplit, align_to=32),
    "swiglu64": partial(SwiGLUFFNSplit, align_to=64),
    "swiglu128": partial(SwiGLUFFNSplit, align_to=128),
}
ROPE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# the release's names of these tables (dinov3.models.vision_transformer)
norm_layer_dict, ffn_layer_dict, dtype_dict = NORM_LAYERS, FFN_LAYERS, ROPE_DTYPES

logger = logging.getLogger("dinov2")


def warn_ignored(name: str, ignored: Mapping[str, Any]) -> None:
    """The release's DINOv3 constructors accept unknown keyword arguments and ignore them with a warning (its
    ``build_model`` passes ``patch_size`` to every ConvNeXt); so do these, naming them."""
    if ignored:
        logger.warning("%s ignores the arguments %s (as the release does): check their spelling", name, sorted(ignored))


def init_weights_vit(module: nn.Module, name: str = "") -> None:
    """The release's initialisation of one module: trunc-normal 0.02 linears, zero biases (the masked-k bias mask
    reset), norms and LayerScale reset (``name`` unused, for ``named_apply``)."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
        if hasattr(module, "reset_bias_mask"):
            module.reset_bias_mask()
    elif isinstance(module, (nn.LayerNorm, RMSNorm, LayerScale)):
        module.reset_parameters()


def _choice(table: Mapping[str, Any], name: str, value: str) -> Any:
    if value not in table:
        raise ValueError(f"DinoVisionTransformerV3: {name}={value!r} is not one of {sorted(table)}")
    return table[value]


def features_dict(cls_and_storage: Tensor, patches: Tensor, prenorm: Tensor, masks: Tensor | None) -> dict[str, Any]:
    """The DINOv3 ``forward_features`` dict from normed CLS + storage ``[B, 1 + n, D]`` and patches ``[B, HW, D]``."""
    return {
        "x_norm_clstoken": cls_and_storage[:, 0],
        "x_storage_tokens": cls_and_storage[:, 1:],
        "x_norm_patchtokens": patches,
        "x_prenorm": prenorm,
        "masks": masks,
    }


class DinoVisionTransformerV3(nn.Module):
    """DINOv3 ViT backbone; ``forward_features(x)`` returns ``x_norm_clstoken`` ``[B, D]``, ``x_storage_tokens``
    ``[B, n_storage, D]``, ``x_norm_patchtokens`` ``[B, HW, D]``, ``x_prenorm`` ``[B, N, D]`` and ``masks``.

    Arguments and defaults are those of the release's ``DinoVisionTransformer`` (``pos_embed_rope_dtype`` defaults
    to ``'bf16'`` as in training; the hub builders pass ``'fp32'``). Image sides must be multiples of the patch.
    """

    def __init__(
        self,
        *,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        pos_embed_rope_base: float | None = 100.0,
        pos_embed_rope_min_period: float | None = None,
        pos_embed_rope_max_period: float | None = None,
        pos_embed_rope_normalize_coords: str = "separate",
        pos_embed_rope_shift_coords: float | None = None,
        pos_embed_rope_jitter_coords: float | None = None,
        pos_embed_rope_rescale_coords: float | None = None,
        pos_embed_rope_dtype: str = "bf16",
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        ffn_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        layerscale_init: float | None = None,
        norm_layer: str = "layernorm",
        ffn_layer: str = "mlp",
        ffn_bias: bool = True,
        proj_bias: bool = True,
        n_storage_tokens: int = 0,
        mask_k_bias: bool = False,
        untie_cls_and_patch_norms: bool = False,
        untie_global_and_local_cls_norm: bool = False,
        device: torch.device | str | None = None,
        **ignored_kwargs: Any,
    ) -> None:
        super().__init__()
        warn_ignored(type(self).__name__, ignored_kwargs)
        with torch.device(device) if device is not None else contextlib.nullcontext():  # the release's device=
            norm_cls = _choice(NORM_LAYERS, "norm_layer", norm_layer)
            ffn_cls = _choice(FFN_LAYERS, "ffn_layer", ffn_layer)
            self.num_features = self.embed_dim = embed_dim
            self.n_blocks = depth
            self.num_heads = num_heads
            self.patch_size = patch_size
            self.n_storage_tokens = n_storage_tokens
            self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim, flatten_embedding=False)
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
            if n_storage_tokens > 0:
                self.storage_tokens = nn.Parameter(torch.zeros(1, n_storage_tokens, embed_dim))
            self.rope_embed = RopePositionEmbedding(
                embed_dim,
                num_heads=num_heads,
                base=pos_embed_rope_base,
                min_period=pos_embed_rope_min_period,
                max_period=pos_embed_rope_max_period,
                normalize_coords=pos_embed_rope_normalize_coords,
                shift_coords=pos_embed_rope_shift_coords,
                jitter_coords=pos_embed_rope_jitter_coords,
                rescale_coords=pos_embed_rope_rescale_coords,
                dtype=_choice(ROPE_DTYPES, "pos_embed_rope_dtype", pos_embed_rope_dtype),
            )
            block = partial(
                RopeBlock,
                dim=embed_dim,
                num_heads=num_heads,
                ffn_ratio=ffn_ratio,
                qkv_bias=qkv_bias,
                proj_bias=proj_bias,
                ffn_bias=ffn_bias,
                drop_path=drop_path_rate,
                norm_layer=norm_cls,
                ffn_layer=ffn_cls,
                init_values=layerscale_init,
                mask_k_bias=mask_k_bias,
            )
            self.blocks = nn.ModuleList(block() for _ in range(depth))
            self.norm = norm_cls(embed_dim)
            self.untie_cls_and_patch_norms = untie_cls_and_patch_norms
            self.cls_norm = norm_cls(embed_dim) if untie_cls_and_patch_norms else None
            self.untie_global_and_local_cls_norm = untie_global_and_local_cls_norm
            self.local_cls_norm = norm_cls(embed_dim) if untie_global_and_local_cls_norm else None
            self.head = nn.Identity()
            self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))

    def prepare_tokens_with_masks(self, x: Tensor, masks: Tensor | None = None) -> tuple[Tensor, tuple[int, int]]:
        """Images ``[B, C, H, W]`` -> tokens ``[B, 1 + n_storage + HW, D]`` and the patch grid ``(h, w)``."""
        x = self.patch_embed(x)  # [B, h, w, D]
        B, h, w, _ = x.shape
        x = x.flatten(1, 2)  # [B, HW, D]
        if masks is not None:
            x = torch.where(masks.unsqueeze(-1), self.mask_token.to(x.dtype).unsqueeze(0), x)
            cls_token = self.cls_token
        else:
            cls_token = self.cls_token + 0 * self.mask_token  # keeps mask_token in the graph (DDP/FSDP)
        storage = self.storage_tokens if self.n_storage_tokens > 0 else cls_token.new_zeros(1, 0, cls_token.shape[-1])
        return torch.cat([cls_token.expand(B, -1, -1), storage.expand(B, -1, -1), x], dim=1), (h, w)

    def _run_blocks(self, x: Tensor, hw: tuple[int, int], keep: Sequence[int] = ()) -> tuple[Tensor, list[Tensor]]:
        # Without augmentation draws every block gets the same RoPE table: compute it once. With them each block
        # draws its own just before it runs, so that the draws interleave with the blocks' own random draws
        # (stochastic depth) in the release's order.
        shared = None if self.rope_embed.draws_augmentations else self.rope_embed(H=hw[0], W=hw[1])
        kept = []
        for i, blk in enumerate(self.blocks):
            x = blk(x, shared if shared is not None else self.rope_embed(H=hw[0], W=hw[1]))
            if i in keep:
                kept.append(x)
        return x, kept

    def _split_norm(self, x: Tensor, local_crops: bool) -> tuple[Tensor, Tensor]:
        """Normed (CLS + storage) ``[B, 1 + n, D]`` and patches ``[B, HW, D]``."""
        prefix = self.n_storage_tokens + 1
        if self.untie_cls_and_patch_norms or self.untie_global_and_local_cls_norm:
            if self.untie_global_and_local_cls_norm and local_crops:
                cls_reg = self.local_cls_norm(x[:, :prefix])
            elif self.untie_cls_and_patch_norms:
                cls_reg = self.cls_norm(x[:, :prefix])
            else:
                cls_reg = self.norm(x[:, :prefix])
            return cls_reg, self.norm(x[:, prefix:])
        x_norm = self.norm(x)
        return x_norm[:, :prefix], x_norm[:, prefix:]

    def forward_features(
        self, x: Tensor | list[Tensor], masks: Tensor | list[Tensor | None] | None = None
    ) -> dict[str, Any] | list[dict[str, Any]]:
        """One output dict per crop; a list of crops (global, local) gives a list of dicts.

        In training with ``untie_global_and_local_cls_norm``, the second list entry (local crops) uses
        ``local_cls_norm`` for CLS + storage tokens.
        """
        if isinstance(x, Tensor):
            return self.forward_features([x], [masks])[0]
        masks_list = masks if masks is not None else [None] * len(x)
        outputs = []
        for idx, (crops, crop_masks) in enumerate(zip(x, masks_list)):
            tokens, hw = self.prepare_tokens_with_masks(crops, crop_masks)
            tokens, _ = self._run_blocks(tokens, hw)
            cls_reg, patches = self._split_norm(tokens, local_crops=self.training and idx == 1)
            outputs.append(features_dict(cls_reg, patches, tokens, crop_masks))
        return outputs

    def forward_features_list(self, x_list: Sequence[Tensor], masks_list: Sequence[Tensor | None]) -> list[dict]:
        """The release's list form of :meth:`forward_features`: one dict per crop batch."""
        return self.forward_features(list(x_list), list(masks_list))

    def get_intermediate_layers(
        self,
        x: Tensor,
        *,
        n: int | Sequence[int] = 1,
        reshape: bool = False,
        return_class_token: bool = False,
        return_extra_tokens: bool = False,
        norm: bool = True,
    ) -> tuple:
        """Outputs of the last ``n`` blocks (int) or of the listed block indices, as released (keyword arguments
        only after ``x``, as in the release; DINOv2's ViT also takes ``n`` by position).

        Patches ``[B, HW, D]`` (``[B, D, h, w]`` with ``reshape``), zipped with the CLS token ``[B, D]`` and / or the
        storage tokens ``[B, n_storage, D]`` when asked. ``norm`` uses ``cls_norm`` for CLS + storage when untied.
        """
        total = len(self.blocks)
        take = last_or_listed(n, total)
        tokens, hw = self.prepare_tokens_with_masks(x)
        _, outputs = self._run_blocks(tokens, hw, keep=take)
        if len(outputs) != len(take):
            raise ValueError(f"get_intermediate_layers: n={n!r} asks for blocks outside 0..{total - 1}")
        prefix = self.n_storage_tokens + 1
        if norm:
            if self.untie_cls_and_patch_norms:
                outputs = [torch.cat((self.cls_norm(o[:, :prefix]), self.norm(o[:, prefix:])), dim=1) for o in outputs]
            else:
                outputs = [self.norm(o) for o in outputs]
        class_tokens = [o[:, 0] for o in outputs]
        extra_tokens = [o[:, 1:prefix] for o in outputs]
        patches = [o[:, prefix:] for o in outputs]
        extras = ([class_tokens] if return_class_token else []) + ([extra_tokens] if return_extra_tokens else [])
        return pack_outputs(patches, [hw] * len(patches) if reshape else None, *extras)

    def forward(self, *args, is_training: bool = False, **kwargs) -> Tensor | dict[str, Any] | list[dict[str, Any]]:
        """``head(x_norm_clstoken)`` (the head is the identity), or the feature dict(s) when ``is_training``."""
        out = self.forward_features(*args, **kwargs)
        return out if is_training else self.head(out["x_norm_clstoken"])

    @torch.no_grad()
    def init_weights(self) -> None:
        """The release's initialisation: trunc-normal 0.02 linears, tokens N(0, 0.02), zero mask token."""
        self.rope_embed.reset_parameters()
        nn.init.normal_(self.cls_token, std=0.02)
        if self.n_storage_tokens > 0:
            nn.init.normal_(self.storage_tokens, std=0.02)
        nn.init.zeros_(self.mask_token)
        bound = (1 / (self.patch_embed.in_chans * self.patch_size**2)) ** 0.5
        nn.init.uniform_(self.patch_embed.proj.weight, -bound, bound)
        nn.init.uniform_(self.patch_embed.proj.bias, -bound, bound)
        for module in self.modules():
            init_weights_vit(module)


# Sizes of the release's arch functions (dinov3/models/vision_transformer.py): (embed_dim, depth, heads, ffn_ratio).
ARCHS: Registry[tuple[int, int, int, float]] = Registry(
    "DINOv3 ViT size",
    {
        "vit_small": (384, 12, 6, 4.0),
        "vit_base": (768, 12, 12, 4.0),
        "vit_large": (1024, 24, 16, 4.0),
        "vit_so400m": (1152, 27, 18, 3.777777778),
        "vit_huge2": (1280, 32, 20, 4.0),
        "vit_giant2": (1536, 40, 24, 4.0),
        "vit_7b": (4096, 40, 32, 3.0),
    },
)


def _arch(name: str, patch_size: int = 16, **kwargs: Any) -> DinoVisionTransformerV3:
    embed_dim, depth, num_heads, ffn_ratio = ARCHS[name]
    sizes = {"embed_dim": embed_dim, "depth": depth, "num_heads": num_heads, "ffn_ratio": ffn_ratio}
    return DinoVisionTransformerV3(patch_size=patch_size, **{**sizes, **kwargs})


def _arch_function(name: str, doc: str) -> Callable[..., DinoVisionTransformerV3]:
    """The released ``name(patch_size=16, **kwargs)`` constructor of the arch ``name`` of :data:`ARCHS`."""

    def constructor(patch_size: int = 16, **kwargs: Any) -> DinoVisionTransformerV3:
        return _arch(name, patch_size, **kwargs)

    return named(constructor, name, doc)


vit_small = _arch_function("vit_small", "ViT-S (384 wide, 12 blocks, 6 heads).")
vit_base = _arch_function("vit_base", "ViT-B (768 wide, 12 blocks, 12 heads).")
vit_large = _arch_function("vit_large", "ViT-L (1024 wide, 24 blocks, 16 heads).")
vit_so400m = _arch_function("vit_so400m", "SoViT-400m shape (1152 wide, 27 blocks, 18 heads, FFN ratio 3.78).")
vit_huge2 = _arch_function("vit_huge2", "ViT-H with head dim 64 (1280 wide, 32 blocks, 20 heads).")
vit_giant2 = _arch_function("vit_giant2", "ViT-g with head dim 64 (1536 wide, 40 blocks, 24 heads).")
vit_7b = _arch_function("vit_7b", "ViT-7B (4096 wide, 40 blocks, 32 heads, FFN ratio 3).")


# ``student.<key>`` -> constructor argument, as the release's training ``build_model`` passes them.
_STUDENT_KEYS = {
    "patch_size": "patch_size",
    "in_chans": "in_chans",
    "pos_embed_rope_base": "pos_embed_rope_base",
    "pos_embed_rope_min_period": "pos_embed_rope_min_period",
    "pos_embed_rope_max_period": "pos_embed_rope_max_period",
    "pos_embed_rope_normalize_coords": "pos_embed_rope_normalize_coords",
    "pos_embed_rope_shift_coords": "pos_embed_rope_shift_coords",
    "pos_embed_rope_jitter_coords": "pos_embed_rope_jitter_coords",
    "pos_embed_rope_rescale_coords": "pos_embed_rope_rescale_coords",
    "qkv_bias": "qkv_bias",
    "layerscale": "layerscale_init",
    "norm_layer": "norm_layer",
    "ffn_layer": "ffn_layer",
    "ffn_bias": "ffn_bias",
    "proj_bias": "proj_bias",
    "n_storage_tokens": "n_storage_tokens",
    "mask_k_bias": "mask_k_bias",
    "untie_cls_and_patch_norms": "untie_cls_and_patch_norms",
    "untie_global_and_local_cls_norm": "untie_global_and_local_cls_norm",
    "drop_path_rate": "drop_path_rate",
}


def build_from_student_cfg(student_section: Mapping[str, Any], img_size: int = 224) -> DinoVisionTransformerV3:
    """The ViT named by ``student.arch`` (``vit_small`` ... ``vit_7b``) with the release's ``student.*`` keys.

    Like the release's training builder, ``student.ffn_ratio`` and ``student.pos_embed_rope_dtype`` are not read:
    the arch fixes the FFN ratio and RoPE runs in the constructor's default dtype (bf16). Missing keys keep the
    constructor defaults. The model is returned un-initialised apart from the constructor's values; call
    :meth:`DinoVisionTransformerV3.init_weights` for the release's initialisation.
    """
    arch = student_section.get("arch")
    if arch not in ARCHS:
        raise ValueError(f"student.arch={arch!r} is not a DINOv3 ViT; choose one of {sorted(ARCHS)}")
    kwargs = {arg: student_section[key] for key, arg in _STUDENT_KEYS.items() if key in student_section}
    return _arch(arch, img_size=img_size, **kwargs)
