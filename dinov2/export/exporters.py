"""Deployment formats of a backbone: ``torch.export`` programs (dynamic batch, height, width), ONNX, safetensors.

Every backbone exports with a dynamic batch size and image size: the position-embedding interpolation has a
guard-free form under ``torch.export`` (:mod:`dinov2.models.pos_embed`), so one program serves every resolution
(sides must be multiples of the patch size there: crop images first, as the eager model does itself). The
exported computation is the eager one; only the scale-factor resize of the plain backbones' position table
(offset 0.1) is written with tensor operations there, which agree with the eager kernel to about 1e-6 of the
values' size. (A PyTorch without ``torch.compiler.is_exporting`` traces the eager code: programs are then
pinned to their tracing size.)
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.export import Dim, ExportedProgram

from dinov2.models.convert import chunked_to_flat
from dinov2.utils.io import atomic_path

__all__ = [
    "BackboneOutputs",
    "backbone_config",
    "export_program",
    "export_onnx",
    "check_onnx",
    "save_safetensors",
]

MAX_SIDE = 14 * 512  # largest image side a dynamic export accepts (px)


class BackboneOutputs(nn.Module):
    """An export-friendly view of a backbone: ``pixel_values [B, 3, H, W]`` -> a tuple of tensors.

    ``(cls_token [B, D], patch_tokens [B, N, D])``, plus ``register_tokens [B, R, D]`` for register models:
    the normalised tokens of ``forward_features`` (names in :attr:`output_names`).
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        registers = ["register_tokens"] if backbone.num_register_tokens else []
        self.output_names = ["cls_token", "patch_tokens", *registers]

    def forward(self, pixel_values: Tensor) -> tuple[Tensor, ...]:
        features = self.backbone.forward_features(pixel_values)
        outputs = (features["x_norm_clstoken"], features["x_norm_patchtokens"])
        return outputs + ((features["x_norm_regtokens"],) if self.backbone.num_register_tokens else ())


def _tracing_example(example: Tensor, dynamic: bool) -> Tensor:
    """A batch of 1 would be traced as a constant (torch.export specialises sizes 0 and 1): trace with 2."""
    return example.expand(2, *example.shape[1:]).contiguous() if dynamic and example.shape[0] < 2 else example


def _dynamic_shapes(patch_size: int) -> tuple[dict[int, Dim], ...]:
    """Batch 1..4096; height and width multiples of the patch size, from 2 patches to ``MAX_SIDE`` px."""
    rows = Dim("patch_rows", min=2, max=MAX_SIDE // patch_size)
    columns = Dim("patch_columns", min=2, max=MAX_SIDE // patch_size)
    return ({0: Dim("batch", min=1, max=4096), 2: patch_size * rows, 3: patch_size * columns},)


def export_program(model: nn.Module, example: Tensor, dynamic: bool = True) -> ExportedProgram:
    """``torch.export`` of :class:`BackboneOutputs` around ``model`` (eval mode), traced with ``example``.

    ``dynamic``: batch, height and width are symbolic (batch 1..4096; sides multiples of the patch size from 2
    patches to ``MAX_SIDE`` px: crop images first, as the eager model does); otherwise the program is specialised
    to ``example``'s shape. Run it with ``program.module()(images)``.
    """
    wrapper = BackboneOutputs(model).eval()
    shapes = _dynamic_shapes(model.patch_size) if dynamic else None
    with torch.no_grad():
        return torch.export.export(wrapper, (_tracing_example(example, dynamic),), dynamic_shapes=shapes)


def export_onnx(model: nn.Module, path: str | os.PathLike, example: Tensor, dynamic: bool = True) -> Path:
    """ONNX file of :class:`BackboneOutputs` (input ``pixel_values``; outputs ``cls_token``, ``patch_tokens``
    [, ``register_tokens``]) through ``torch.onnx.export(dynamo=True)``; needs ``onnx`` and ``onnxscript``
    (``export`` extra). Large models put their weights in a ``<file>.data`` file beside it."""
    wrapper = BackboneOutputs(model).eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    shapes = _dynamic_shapes(model.patch_size) if dynamic else None
    with torch.no_grad():
        torch.onnx.export(wrapper, (_tracing_example(example, dynamic),), str(path), dynamo=True, dynamic_shapes=shapes,
                          input_names=["pixel_values"], output_names=wrapper.output_names)  # fmt: skip
    return path


@torch.no_grad()
def check_onnx(model: nn.Module, path: str | os.PathLike, inputs: Sequence[Tensor]) -> list[dict[str, float]]:
    """Run the ONNX file with onnxruntime (CPU) on each input and compare with eager ``model``.

    Returns, per input, ``{output name: max |onnx - eager|}`` and ``"scale"``: the largest eager magnitude.
    """
    import onnxruntime

    wrapper = BackboneOutputs(model).eval()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    report = []
    for x in inputs:
        outputs = session.run(None, {"pixel_values": x.numpy()})
        expected = wrapper(x)
        gaps = {name: float((torch.from_numpy(o) - e).abs().max()) for name, o, e in zip(wrapper.output_names,
                                                                                        outputs, expected)}  # fmt: skip
        report.append({**gaps, "scale": max(float(e.abs().max()) for e in expected)})
    return report


def backbone_config(model: nn.Module) -> dict:
    """Constructor arguments of :class:`~dinov2.models.vision_transformer.DinoVisionTransformer` for ``model``
    (flat blocks; ``img_size`` from the stored position grid)."""
    block = model.blocks[0][-1] if model.chunked_blocks else model.blocks[0]
    ffn = "swiglufused" if hasattr(block.mlp, "w12") else "mlp"
    return {
        "img_size": math.isqrt(model.pos_embed.shape[1] - 1) * model.patch_size,
        "patch_size": model.patch_size,
        "embed_dim": model.embed_dim,
        "depth": model.n_blocks,
        "num_heads": model.num_heads,
        "mlp_ratio": 4,
        "ffn_layer": ffn,
        "qkv_bias": block.attn.qkv.bias is not None,
        "proj_bias": block.attn.proj.bias is not None,
        "ffn_bias": (block.mlp.w12 if ffn != "mlp" else block.mlp.fc1).bias is not None,
        "init_values": model.init_values,
        "num_register_tokens": model.num_register_tokens,
        "interpolate_offset": model.interpolate_offset,
        "interpolate_antialias": model.interpolate_antialias,
        "block_chunks": 0,
    }


def save_safetensors(model: nn.Module, path: str | os.PathLike, name: str | None = None) -> Path:
    """The backbone's state dict (hub key names, flat blocks) as ``.safetensors``; the metadata holds
    ``dinov2_config`` (JSON constructor arguments, :func:`backbone_config`) and ``dinov2_model`` (``name``)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in chunked_to_flat(model.state_dict()).items()}
    metadata = {"format": "pt", "dinov2_config": json.dumps(backbone_config(model))}
    if name:
        metadata["dinov2_model"] = name
    with atomic_path(path) as tmp:  # never a partial file under the final name
        save_file(tensors, str(tmp), metadata=metadata)
    return path
