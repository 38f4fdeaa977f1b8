"""Deployment formats of a backbone: ``torch.export`` programs, ONNX, safetensors (``python -m dinov2.export``)."""

from dinov2.export.exporters import (
    BackboneOutputs,
    backbone_config,
    check_onnx,
    export_onnx,
    export_program,
    onnx_branch_nodes,
    save_safetensors,
)

__all__ = [
    "BackboneOutputs",
    "backbone_config",
    "check_onnx",
    "export_onnx",
    "export_program",
    "onnx_branch_nodes",
    "save_safetensors",
]
