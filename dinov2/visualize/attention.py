"""Attention maps of the last block, read without changing the model's computation.

The attention kernel (``scaled_dot_product_attention``) never materialises the attention matrix, so a forward
pre-hook on the last block's attention module receives its input (the normalised tokens) and recomputes the
queries and keys from the same ``qkv`` weights: ``softmax(q k^T / sqrt(head_dim))`` per head, in float32. The hook
returns nothing, so the forward pass and its outputs are untouched.

DINOv3 ViTs: the hook also receives the block's RoPE table and rotates the patch queries and keys with the
attention module's own ``apply_rope`` (the cls and storage tokens are not rotated, as in the block); the masked
key bias is applied as the module applies it. Storage tokens play the part of DINOv2's registers: they are left
out of the patch grid and shown separately. Backbones without attention (the DINOv3 ConvNeXt) raise an error.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dinov2.features.tokens import extra_tokens
from dinov2.visualize.progress import block_progress, transformer_blocks

__all__ = [
    "AttentionMaps",
    "has_attention",
    "last_block",
    "last_block_attention",
    "write_attention_pictures",
]


@dataclass
class AttentionMaps:
    """One image's last-block attention. ``cls_to_patches`` ``[H, h, w]``: the class token's attention per head
    over the patch grid; ``cls_to_registers`` ``[H, R]``; ``registers_to_patches`` ``[R, H, h, w]``: each
    register token's own attention (as a query) over the patches. Rows of the full matrix sum to 1."""

    cls_to_patches: Tensor
    cls_to_registers: Tensor
    registers_to_patches: Tensor


def has_attention(model: nn.Module) -> bool:
    """Whether ``model`` is a transformer whose blocks have an attention module (the ConvNeXt has none)."""
    blocks = getattr(model, "blocks", None)
    return blocks is not None and hasattr(transformer_blocks(model)[-1], "attn")


def last_block(model: nn.Module) -> nn.Module:
    """The model's final transformer block (chunked models: the last non-padding block of the last chunk)."""
    if not has_attention(model):
        raise ValueError(
            f"attention maps need a transformer backbone; {type(model).__name__} has no attention blocks "
            "(the DINOv3 ConvNeXt is convolutional): use the pca command for its features"
        )
    return transformer_blocks(model)[-1]


def _qkv_bias(qkv: nn.Module) -> Tensor | None:
    """The bias the qkv linear adds (DINOv3's masked key bias multiplied by its mask), in float32."""
    if qkv.bias is None:
        return None
    mask = getattr(qkv, "bias_mask", None)
    return qkv.bias.float() if mask is None else (qkv.bias * mask.to(qkv.bias.dtype)).float()


def _attention_probs(attn: nn.Module, tokens: Tensor, query_count: int, rope=None) -> Tensor:
    """``[B, H, query_count, N]`` attention of the first ``query_count`` tokens, from ``tokens`` ``[B, N, D]``
    (``rope``: the ``(sin, cos)`` table the block passes a DINOv3 attention, applied as the module applies it)."""
    batch, n, dim = tokens.shape
    qkv = F.linear(tokens.float(), attn.qkv.weight.float(), _qkv_bias(attn.qkv))
    q, k, _ = qkv.view(batch, n, 3, attn.num_heads, dim // attn.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
    if rope is not None:
        q, k = attn.apply_rope(q, k, rope)  # patch tokens only, in the table's dtype, cast back to float32
    logits = q[:, :, :query_count] @ k.transpose(-2, -1) * attn.scale  # [B, H, Q, N]
    return logits.softmax(-1)


@torch.inference_mode()
def last_block_attention(model: nn.Module, image: Tensor) -> AttentionMaps:
    """Attention maps of ``image`` ``[1, 3, H, W]`` in the last block of ``model`` (eval mode; DINOv2 or DINOv3
    ViT, whose storage tokens fill the register fields)."""
    if image.ndim != 4 or image.shape[0] != 1:
        raise ValueError(f"last_block_attention takes one image [1, 3, H, W], got shape {tuple(image.shape)}")
    attn = last_block(model).attn
    extra = extra_tokens(model)
    registers = extra.count if extra else 0
    captured: list[Tensor] = []

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        tokens, groups = (args[0], args[1]) if len(args) > 1 else (args[0], None)
        if groups is not None:  # packed [T, D] with one (batch, tokens) group
            (batch, n), *_ = groups
            tokens = tokens.reshape(batch, n, -1)
        rope = kwargs.get("rope")  # DINOv3: RopeBlock passes its table by keyword
        captured.append(_attention_probs(module, tokens, 1 + registers, rope)[0])  # [H, 1 + R, N]

    handle = attn.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        model.forward_features(image)  # the full last block (forward() would compute the cls token only)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise RuntimeError(f"expected one call of the last attention module, saw {len(captured)}")
    probs = captured[0]
    grid = (image.shape[-2] // model.patch_size, image.shape[-1] // model.patch_size)
    patches = probs[:, :, 1 + registers :].reshape(probs.shape[0], 1 + registers, *grid)  # [H, 1 + R, h, w]
    return AttentionMaps(
        cls_to_patches=patches[:, 0],
        cls_to_registers=probs[:, 0, 1 : 1 + registers],
        registers_to_patches=patches[:, 1:].transpose(0, 1),
    )


def write_attention_pictures(
    model: nn.Module, paths: Sequence[str | os.PathLike], output_dir: str | os.PathLike, resolution: int = 448
) -> dict[str, Path]:
    """Last-block attention maps of the images at ``paths``, in ``output_dir/<stem>/``:

    ``cls_head<h>.png`` (class token over the patches, head h), ``cls_mean.png`` (mean over heads), and with
    registers ``register<r>.png`` (register r as a query, mean over heads) and ``cls_to_registers.png`` (one row
    per head, one tile per register). ``attention_sheet.png``: one row per image (input, mean, heads, registers);
    ``attention.json``: per image and head, the share of the class token's attention that goes to registers.
    """
    from dinov2.utils.io import write_json
    from dinov2.visualize.images import contact_sheet, grid_to_image, heatmap, model_input, save_png
    from dinov2.visualize.pca import unique_stems

    output_dir, p = Path(output_dir), model.patch_size
    written, rows, shares = {}, [], {}
    for stem, path in zip(unique_stems(paths), paths):
        image, picture = model_input(path, resolution, p, model.num_heads)
        with block_progress(model, 1, f"attention of {stem}"):
            maps = last_block_attention(model, image)
        named = {f"cls_head{h}.png": grid_to_image(heatmap(m), p) for h, m in enumerate(maps.cls_to_patches)}
        named["cls_mean.png"] = grid_to_image(heatmap(maps.cls_to_patches.mean(0)), p)
        for r, m in enumerate(maps.registers_to_patches):
            named[f"register{r}.png"] = grid_to_image(heatmap(m.mean(0)), p)
        if maps.cls_to_registers.numel():
            named["cls_to_registers.png"] = grid_to_image(heatmap(maps.cls_to_registers), 16)
        for name, picture_out in named.items():
            written[f"{stem}/{name}"] = save_png(picture_out, output_dir / stem / name)
        heads = [named[f"cls_head{h}.png"] for h in range(len(maps.cls_to_patches))]
        registers = [named[f"register{r}.png"] for r in range(len(maps.registers_to_patches))]
        rows.append([picture, named["cls_mean.png"], *heads, *registers])
        shares[stem] = maps.cls_to_registers.sum(-1).tolist()  # [H]
    written["attention_sheet.png"] = save_png(contact_sheet(rows), output_dir / "attention_sheet.png")
    write_json(output_dir / "attention.json", {"cls_attention_on_registers_per_head": shares})
    written["attention.json"] = output_dir / "attention.json"
    return written
