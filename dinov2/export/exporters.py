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

from dinov2.features.tokens import extra_tokens, token_stride
from dinov2.models.convert import chunked_to_flat
from dinov2.models.families import family_for_weights
from dinov2.utils.io import atomic_path

__all__ = [
    "BackboneOutputs",
    "backbone_config",
    "onnx_branch_nodes",
    "export_program",
    "export_onnx",
    "check_onnx",
    "save_safetensors",
]

MAX_SIDE = 14 * 512  # largest image side a dynamic export accepts (px)


class BackboneOutputs(nn.Module):
    """An export-friendly view of a backbone: ``pixel_values [B, 3, H, W]`` -> a tuple of tensors.

    ``(cls_token [B, D], patch_tokens [B, N, D])``, plus ``register_tokens [B, R, D]`` for DINOv2 register models
    or ``storage_tokens [B, R, D]`` for DINOv3 ViTs: the normalised tokens of ``forward_features`` (names in
    :attr:`output_names`). A DINOv3 ConvNeXt gives its pooled token and its last stage (stride 32).
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.extra = extra_tokens(backbone)
        self.output_names = ["cls_token", "patch_tokens", *([self.extra.name] if self.extra else [])]

    def forward(self, pixel_values: Tensor) -> tuple[Tensor, ...]:
        features = self.backbone.forward_features(pixel_values)
        outputs = (features["x_norm_clstoken"], features["x_norm_patchtokens"])
        return outputs + ((features[self.extra.key],) if self.extra else ())


def _tracing_example(example: Tensor, dynamic: bool) -> Tensor:
    """A batch of 1 would be traced as a constant (torch.export specialises sizes 0 and 1): trace with 2."""
    return example.expand(2, *example.shape[1:]).contiguous() if dynamic and example.shape[0] < 2 else example


def _dynamic_shapes(patch_size: int) -> tuple[dict[int, Dim], ...]:
    """Batch 1..4096; height and width multiples of the patch size, from 2 patches to ``MAX_SIDE`` px."""
    rows = Dim("patch_rows", min=2, max=MAX_SIDE // patch_size)
    columns = Dim("patch_columns", min=2, max=MAX_SIDE // patch_size)
    return ({0: Dim("batch", min=1, max=4096), 2: patch_size * rows, 3: patch_size * columns},)


def export_program(
    model: nn.Module, example: Tensor, dynamic: bool = True, patch_size: int | None = None
) -> ExportedProgram:
    """``torch.export`` of :class:`BackboneOutputs` around ``model`` (eval mode), traced with ``example``.

    ``dynamic``: batch, height and width are symbolic (batch 1..4096; sides multiples of ``patch_size`` (default
    ``model.patch_size``; 32 for a DINOv3 ConvNeXt) from 2 patches to ``MAX_SIDE`` px: crop images first, as the
    eager model does); otherwise the program is specialised to ``example``'s shape. Run it with
    ``program.module()(images)``.
    """
    wrapper = BackboneOutputs(model).eval()
    shapes = _dynamic_shapes(token_stride(model, patch_size)) if dynamic else None
    with torch.no_grad():
        return torch.export.export(wrapper, (_tracing_example(example, dynamic),), dynamic_shapes=shapes)


def export_onnx(
    model: nn.Module, path: str | os.PathLike, example: Tensor, dynamic: bool = True, patch_size: int | None = None
) -> Path:
    """ONNX file of :class:`BackboneOutputs` (input ``pixel_values``; outputs ``cls_token``, ``patch_tokens``
    [, ``register_tokens`` / ``storage_tokens``]) through ``torch.onnx.export(dynamo=True)``; needs ``onnx`` and
    ``onnxscript`` (``export`` extra). Large models put their weights in a ``<file>.data`` file beside it.
    ``dynamic`` / ``patch_size`` as :func:`export_program`."""
    wrapper = BackboneOutputs(model).eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    shapes = _dynamic_shapes(token_stride(model, patch_size)) if dynamic else None
    with torch.no_grad():
        torch.onnx.export(
            wrapper,
            (_tracing_example(example, dynamic),),
            str(path),
            dynamo=True,
            dynamic_shapes=shapes,
            input_names=["pixel_values"],
            output_names=wrapper.output_names,
        )
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
        gaps = {
            name: float((torch.from_numpy(o) - e).abs().max())
            for name, o, e in zip(wrapper.output_names, outputs, expected)
        }
        report.append({**gaps, "scale": max(float(e.abs().max()) for e in expected)})
    return report


def onnx_branch_nodes(path: str | os.PathLike) -> list[str]:
    """Names of the ``If`` nodes of an ONNX file, in the main graph, its subgraphs and its local functions.

    An ``If`` is a branch on a value computed at run time (e.g. a Python ``if`` on an image size that the
    exporter could not resolve): TensorRT rejects such graphs or builds them slowly, so an export should have none.
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    found: list[str] = []

    def visit(nodes) -> None:
        for node in nodes:
            if node.op_type == "If":
                found.append(node.name or f"If#{len(found)}")
            for attribute in node.attribute:
                for graph in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                    visit(graph.node)

    visit(model.graph.node)
    for function in model.functions:
        visit(function.node)
    return found


def _dinov2_vit_config(model: nn.Module) -> dict:
    """Constructor arguments of a DINOv2 ``DinoVisionTransformer`` (flat blocks; ``img_size`` from the stored
    position grid)."""
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


def _model_facts(model: nn.Module) -> dict:
    """What a DINOv3 ViT's weights do not tell: its norm and RoPE settings, read from the modules."""
    if not hasattr(model, "rope_embed"):
        return {}
    norm, rope = model.norm, model.rope_embed
    kind = "rmsnorm" if not isinstance(norm, nn.LayerNorm) else ("layernorm" if norm.eps == 1e-6 else "layernormbf16")
    return {
        "norm_layer": kind,
        "pos_embed_rope_base": rope.base,
        "pos_embed_rope_min_period": rope.min_period,
        "pos_embed_rope_max_period": rope.max_period,
        "pos_embed_rope_normalize_coords": rope.normalize_coords,
    }


def _family_config(model: nn.Module) -> tuple[dict, dict[str, str]]:
    """Constructor arguments of ``model`` and the metadata naming what they are for (``dinov2_family`` /
    ``dinov2_arch`` for a family other than the DINOv2 ViT, read from the weights as the backbone door reads them)."""
    if hasattr(model, "pos_embed") and hasattr(model, "interpolate_offset"):
        return _dinov2_vit_config(model), {}
    state_dict = model.state_dict()
    family = family_for_weights(state_dict)
    arch, kwargs = family.kwargs_from_weights(state_dict)
    return {**kwargs, **_model_facts(model)}, {"dinov2_family": family.name, "dinov2_arch": arch}


def backbone_config(model: nn.Module) -> dict:
    """Constructor arguments of ``model``: for a DINOv2 ViT those of
    :class:`~dinov2.models.vision_transformer.DinoVisionTransformer` (flat blocks; ``img_size`` from the stored
    position grid); for another family (DINOv3 ViT, ConvNeXt) those of its arch function, as the family reads them
    from the weights, with a DINOv3 ViT's norm and RoPE settings read from its modules."""
    return _family_config(model)[0]


def save_safetensors(model: nn.Module, path: str | os.PathLike, name: str | None = None) -> Path:
    """The backbone's state dict (hub key names, flat blocks) as ``.safetensors``; the metadata holds
    ``dinov2_config`` (JSON constructor arguments, :func:`backbone_config`), for a family other than the DINOv2 ViT
    ``dinov2_family`` and ``dinov2_arch`` (the registered family and arch function they are for), and
    ``dinov2_model`` (``name``)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors, storages = {}, set()
    for key, value in chunked_to_flat(model.state_dict()).items():
        tensor = value.detach().to("cpu").contiguous()
        if tensor.untyped_storage().data_ptr() in storages:  # one module under two names (ConvNeXt's norm = norms.3)
            tensor = tensor.clone()  # safetensors refuses shared memory; the file keeps both released keys
        storages.add(tensor.untyped_storage().data_ptr())
        tensors[key] = tensor
    config, family = _family_config(model)
    metadata = {"format": "pt", "dinov2_config": json.dumps(config), **family}
    if name:
        metadata["dinov2_model"] = name
    with atomic_path(path) as tmp:  # never a partial file under the final name
        save_file(tensors, str(tmp), metadata=metadata)
    return path
