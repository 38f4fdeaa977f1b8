"""``python -m dinov2.export {onnx,program,safetensors,hf} --model NAME [--weights W] --output F [--dynamic]``.

- ``onnx``: an ONNX file (``export`` extra), checked against eager PyTorch with onnxruntime when installed (at the
  export resolution, and with ``--dynamic`` at two other sizes and batch sizes);
- ``program``: a ``torch.export`` program (``.pt2``; load it with ``torch.export.load(F).module()``);
- ``safetensors``: the weights with our key names and the constructor arguments in the metadata;
- ``hf``: a Hugging Face ``transformers`` model folder (``config.json`` + ``model.safetensors``; ``Dinov2Model``,
  ``DINOv3ViTModel`` or ``DINOv3ConvNextModel``).

The backbone: ``--model NAME`` (DINOv2 or DINOv3 hub name), ``--config-file F`` or ``--weights W`` alone (its
architecture read from the weights). A DINOv3 ViT's outputs add ``storage_tokens``; a DINOv3 ConvNeXt's patch
tokens are its last stage (one per 32 x 32 px), so its sizes are multiples of 32. The ONNX check also lists any
``If`` node (a data-dependent branch, which TensorRT rejects).

``--dynamic`` makes batch size, height and width symbolic; without it the export is specialised to
``--batch-size`` images of ``--resolution`` px.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
from pathlib import Path

import torch

from dinov2.features.backbone_args import BACKBONE_NOTE, add_backbone_args, check_backbone_args, loaded_from_args
from dinov2.utils.cli import ArgumentParser, check_writable_dir

logger = logging.getLogger("dinov2")

FORMATS = ("onnx", "program", "safetensors", "hf")


def get_args_parser() -> argparse.ArgumentParser:
    """``{onnx,program,safetensors,hf} --model NAME | --config-file F ... --output F`` (no config overrides)."""
    parser = ArgumentParser(
        description="Export a DINOv2 / DINOv3 backbone: ONNX, a torch.export program, safetensors or a transformers "
        "folder.",
        epilog=BACKBONE_NOTE,
    )
    parser.add_argument("format", choices=FORMATS, help="what to write")
    add_backbone_args(parser)
    parser.add_argument("--output", required=True, help="file (.onnx, .pt2, .safetensors) or folder (hf)")
    parser.add_argument("--dynamic", action="store_true", help="symbolic batch, height and width (onnx, program)")
    parser.add_argument(
        "--resolution",
        type=int,
        default=224,
        help="example image side in px, rounded down to a "
        "multiple of the patch size (onnx, program); --dynamic programs take any such multiple",
    )
    parser.add_argument("--batch-size", type=int, default=1, help="example batch size (onnx, program)")
    parser.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison (onnx)")
    return parser


def _check_inputs(args: argparse.Namespace, patch_size: int) -> list[torch.Tensor]:
    """The export's own shape, and with --dynamic two more (other batch sizes, non-square)."""
    g = torch.Generator().manual_seed(0)
    side, b, p = _side(args, patch_size), args.batch_size, patch_size
    shapes = [(b, 3, side, side)]
    if args.dynamic:
        shapes += [(b + 1, 3, side + 2 * p, max(side - p, 2 * p)), (1, 3, max(side // 2 // p * p, 2 * p), side + 3 * p)]
    return [torch.randn(shape, generator=g) for shape in shapes]


def _side(args: argparse.Namespace, patch_size: int) -> int:
    """--resolution rounded down to a multiple of the patch size (what the model would crop it to)."""
    return max(args.resolution - args.resolution % patch_size, 2 * patch_size)


def _onnx(args: argparse.Namespace, model: torch.nn.Module, example: torch.Tensor, patch_size: int) -> int:
    from dinov2.export import check_onnx, export_onnx, onnx_branch_nodes

    export_onnx(model, args.output, example, dynamic=args.dynamic, patch_size=patch_size)
    if args.no_check:
        return 0
    branches = onnx_branch_nodes(args.output)
    if branches:  # data-dependent branches: TensorRT rejects the graph
        print(f"the ONNX graph has {len(branches)} If node(s) ({', '.join(branches[:5])}): TensorRT may reject it")
    if importlib.util.find_spec("onnxruntime") is None:
        print("onnxruntime is not installed: the ONNX file was not checked (pip install 'dinov2[export]')")
        return 0
    worst = 0.0
    inputs = _check_inputs(args, patch_size)
    for x, report in zip(inputs, check_onnx(model, args.output, inputs)):
        scale = report.pop("scale")
        gaps = ", ".join(f"{name} {gap:.2e}" for name, gap in report.items())
        print(f"onnxruntime vs eager on {tuple(x.shape)}: max |diff| {gaps} (outputs up to {scale:.2f})")
        worst = max(worst, max(report.values()) / max(scale, 1.0))
    if worst > 1e-4:
        print(f"ONNX outputs differ from eager by {worst:.2e} of their size (tolerance 1e-4)")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """``dinov2-export`` / ``python -m dinov2.export``: parse ``argv`` (default ``sys.argv``), export; returns the
    exit status (1 when the ONNX check fails)."""
    parser = get_args_parser()
    args = parser.parse_args(argv)
    folder = args.output if args.format == "hf" else Path(args.output).parent  # hf writes a folder, others a file
    check_backbone_args(parser, args)
    check_writable_dir(parser, folder, "--output")  # before the backbone is built or downloaded
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    loaded = loaded_from_args(args)
    model, patch_size = loaded.model, loaded.patch_size  # pixels per output token (32 for a DINOv3 ConvNeXt)
    name = args.model or (f"teacher of {args.config_file}" if args.config_file else str(args.weights))
    example = _check_inputs(args, patch_size)[0]
    if args.format == "onnx":
        status = _onnx(args, model, example, patch_size)
    elif args.format == "program":
        from dinov2.export import export_program

        program = export_program(model, example, dynamic=args.dynamic, patch_size=patch_size)
        torch.export.save(program, args.output)
        status = 0
    elif args.format == "safetensors":
        from dinov2.export import save_safetensors

        save_safetensors(model, args.output, name=name)
        status = 0
    else:
        from dinov2.models.convert import export_hf
        from dinov2.models.peers_dinov3 import export_hf_dinov3

        writers = {"dinov2_vit": export_hf, "dinov3_vit": export_hf_dinov3, "dinov3_convnext": export_hf_dinov3}
        if loaded.family not in writers:
            parser.error(f"hf: no transformers model takes a {loaded.family} backbone; use safetensors")
        writers[loaded.family](model, args.output)
        status = 0
    print(f"wrote {args.format} of {name} to {args.output}")
    return status


if __name__ == "__main__":
    sys.exit(main())
