"""Compare the DINOv3 depther here (``dinov2.heads.depth.depther``) with the released one, on small models.

    python scripts/check_dinov3_depther.py /path/to/dinov3-release-checkout

Imports the released ``dinov3`` package from the checkout (run it in an environment with its imports: torch,
numpy), builds each case with both codes, gives both the same seeded weights (one generator per key; the RoPE
periods as constructed) and prints, per case, the largest difference of the depth maps in float32 and under the
release's CPU autocast (bfloat16; ``autocast_dtype=torch.bfloat16`` here), whether the state-dict keys and order
agree, and whether a decoder built after the same ``torch.manual_seed`` starts from the same weights. With
``--json`` it prints the numbers ``tests/heads/test_dinov3_depther.py`` keeps from the release (output statistics
and samples per case).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import sys
from contextlib import nullcontext
from pathlib import Path

import torch

from dinov2.heads.depth import depther as ours
from dinov2.models.convnext import ConvNeXt
from dinov2.models.vision_transformer_v3 import DinoVisionTransformerV3

VIT = {"patch_size": 16, "embed_dim": 64, "depth": 8, "num_heads": 4, "n_storage_tokens": 4, "mask_k_bias": True}
VIT |= {"layerscale_init": 1e-5, "untie_global_and_local_cls_norm": False}
# RoPE in float32, as the hub builders build it: in bfloat16 (the constructor's default) the release rounds q and k to
# bfloat16, so the last-bit float32 differences between two machines' matrix products flip roundings and move the
# outputs by 1e-4 to 1e-3 of their RMS: numbers kept on one machine would then fail on another.
VIT |= {"pos_embed_rope_dtype": "fp32"}
CONVNEXT = {"depths": [1, 1, 2, 1], "dims": [16, 32, 48, 64]}
SMALL_DPT = {"channels": 16, "post_process_channels": [8, 16, 32, 64]}
CHMV2_HEAD = {**SMALL_DPT, "channels": 32, "n_hidden_channels": 16, "use_bias": True, "projection_after_fusion": False}
# name -> (backbone, decoder config fields, input size); the first two are the hub heads' settings at small size
CASES = {
    "dpt_bn_linear_bins": ("vit", {"type": "dpt", "use_batchnorm": True, "n_output_channels": 32, "max_depth": 100.0,
                                   "head_kwargs": {"channels": 32, "post_process_channels": [64] * 4}}, (2, 3, 64, 80)),
    "dpt_chmv2": ("vit", {"type": "dpt", "use_cls_token": True, "n_output_channels": 32, "max_depth": 96.0,
                          "backbone_out_layers": [1, 3, 5, 7], "bins_strategy": "chmv2_mixlog",
                          "norm_strategy": "chmv2_mixlog", "head_kwargs": CHMV2_HEAD}, (2, 3, 48, 64)),
    "dpt_regression_padding": ("vit", {"type": "dpt", "n_output_channels": 1, "head_kwargs": SMALL_DPT},
                               (1, 3, 50, 70)),
    "linear_log_softmax": ("vit", {"type": "linear", "use_batchnorm": True, "use_cls_token": True,
                                   "n_output_channels": 16, "bins_strategy": "log", "norm_strategy": "softmax",
                                   "backbone_out_layers": "FOUR_LAST"}, (2, 3, 48, 48)),
    "linear_stretch_sigmoid": ("vit", {"type": "linear", "n_output_channels": 8, "norm_strategy": "sigmoid",
                                       "backbone_out_layers": "LAST", "adapt_to_patch_size": "stretch"},
                               (1, 3, 40, 56)),
    "convnext_dpt": ("convnext", {"type": "dpt", "use_cls_token": True, "n_output_channels": 16,
                                  "backbone_out_layers": [0, 1, 2, 3], "head_kwargs": SMALL_DPT}, (1, 3, 66, 90)),
}  # fmt: skip


def seeded_randn(shape, generator: torch.Generator) -> torch.Tensor:
    """Standard normal float32 values the same on every CPU: drawn in float64, then rounded. Float32 draws are not:
    with AVX2 torch fills them by a vectorised Box-Muller whose last bits differ from the scalar one that CPUs
    without AVX2 (and ARM) use."""
    return torch.randn(shape, generator=generator, dtype=torch.float64).float()


def weight(seed: int, key: str, shape) -> torch.Tensor:
    """A seeded tensor for ``key`` (positive for variances and LayerNorm / BatchNorm scales)."""
    g = torch.Generator().manual_seed(seed + int(hashlib.sha256(key.encode()).hexdigest()[:8], 16))
    z = seeded_randn(shape, g)
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "running_var":
        return 0.5 + z.abs()
    if leaf in ("weight", "gamma") and len(shape) == 1:
        return 1 + 0.1 * z
    if len(shape) >= 2:
        return z / math.sqrt(z.numel() // shape[0])
    return 0.1 * z


def seeded_state(model: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    return {
        key: value if key.endswith(("periods", "num_batches_tracked")) else weight(seed, key, tuple(value.shape))
        for key, value in model.state_dict().items()
    }


def released_backbone(kind: str):
    if kind == "vit":
        from dinov3.models.vision_transformer import DinoVisionTransformer

        return DinoVisionTransformer(**VIT)
    from dinov3.models.convnext import ConvNeXt as ReleasedConvNeXt

    return ReleasedConvNeXt(**CONVNEXT)


def our_backbone(kind: str):
    return DinoVisionTransformerV3(**VIT) if kind == "vit" else ConvNeXt(**CONVNEXT)


def config(module, fields: dict):
    """``module.DecoderConfig`` (the release's or ours) with ``fields``, enums from their values."""
    values = dict(fields)
    if isinstance(values.get("backbone_out_layers"), str):
        values["backbone_out_layers"] = module.BackboneLayersSet(values["backbone_out_layers"])
    if "adapt_to_patch_size" in values:
        values["adapt_to_patch_size"] = module.PatchSizeAdaptationStrategy(values["adapt_to_patch_size"])
    return module.DecoderConfig(**values)


def case_input(name: str) -> torch.Tensor:
    return seeded_randn(CASES[name][2], torch.Generator().manual_seed(1))


def our_depther(name: str, autocast_dtype: torch.dtype = torch.float32) -> ours.Depther:
    """Case ``name`` built here, with the seeded weights."""
    kind, fields, _ = CASES[name]
    depther = ours.make_depther_from_config(our_backbone(kind), config(ours, fields), autocast_dtype=autocast_dtype)
    depther.load_state_dict(seeded_state(depther), strict=True)
    return depther.eval()


def fresh_decoder(module, name: str, embed_dims: list[int], seed: int = 3) -> torch.nn.Module:
    """A decoder of case ``name`` built by ``module`` (the release's or ours) after ``torch.manual_seed(seed)``."""
    cfg = config(module, CASES[name][1])
    torch.manual_seed(seed)
    head = (cfg.n_output_channels, cfg.use_batchnorm, cfg.use_cls_token, cfg.type)
    return module.make_head(embed_dims, *head, **cfg.head_kwargs)


def run_case(name: str, autocast: bool) -> dict:
    from dinov3.eval.depth import models as released

    kind, fields, _ = CASES[name]
    theirs = released.make_depther_from_config(released_backbone(kind), config(released, fields))
    if not autocast:  # the release always autocasts on CPU (bfloat16)
        theirs.autocast_ctx = nullcontext
    theirs.load_state_dict(seeded_state(theirs), strict=True)
    mine = our_depther(name, torch.bfloat16 if autocast else torch.float32)
    with torch.no_grad():
        expected, got = theirs.eval()(case_input(name)), mine(case_input(name))
    a = fresh_decoder(released, name, theirs.encoder.embed_dims).state_dict()
    b = fresh_decoder(ours, name, mine.encoder.embed_dims).state_dict()
    return {
        "shape": list(expected.shape),
        "max_abs_diff": (expected.float() - got.float()).abs().max().item() if expected.shape == got.shape else None,
        "keys_in_order": list(theirs.state_dict()) == list(mine.state_dict()),
        "same_fresh_decoder": list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a),
        "expected": expected.float(),
    }


def hub_summary(entry_points: dict) -> dict:
    """Per hub depther (built on the meta device, no weights): decoder parameters, the sha256 of its keys and
    shapes in order, the whole model's key count, the depth conversion and the taps."""
    out = {}
    for name, entry_point in entry_points.items():
        with torch.device("meta"):
            model = entry_point(pretrained=False)
        keys = [(key, list(value.shape)) for key, value in model.decoder.state_dict().items()]
        convert = model.features_to_depth
        out[name] = {
            "decoder_parameters": sum(p.numel() for p in model.decoder.parameters()),
            "decoder_keys_sha256": hashlib.sha256(json.dumps(keys).encode()).hexdigest()[:16],
            "model_keys": len(model.state_dict()),
            "depth": [convert.min_depth, convert.max_depth, convert.bins_strategy, convert.norm_strategy],
            "taps": list(model.encoder.backbone_out_indices),
        }
    return out


def summary(output: torch.Tensor) -> dict:
    flat = output.double().reshape(-1)
    idx = torch.linspace(0, flat.numel() - 1, 8).long()
    return {
        "shape": list(output.shape),
        "dtype": str(output.dtype).removeprefix("torch."),
        "mean": flat.mean().item(),
        "rms": flat.pow(2).mean().sqrt().item(),
        "idx": idx.tolist(),
        "val": flat[idx].tolist(),
    }


def release_args(doc: str, task: str) -> argparse.Namespace:
    """The command line of the release comparisons (a checkout holding ``dinov3/eval/<task>/models``, ``--json``,
    ``--commit``): the checkout is put first on ``sys.path``; torch gets one thread."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("release", type=Path, help="a checkout of facebookresearch/dinov3 (the folder holding dinov3/)")
    parser.add_argument("--json", action="store_true", help="print the release's outputs for the tests instead")
    parser.add_argument("--commit", default="6876159", help="the release's commit, for --json's note (6876159)")
    args = parser.parse_args()
    if not (args.release / "dinov3" / "eval" / task / "models").is_dir():
        parser.error(f"{args.release} holds no dinov3/eval/{task}/models: give a checkout of the DINOv3 release")
    sys.path.insert(0, str(args.release))
    torch.set_num_threads(1)
    return args


def release_json(
    script: str, commit: str, model: str, cases: dict, hub: dict, precision: str = "float32", hub_what: str = ""
) -> str:
    """What ``--json`` prints: a note saying where the numbers come from (``hub_what``: what of the hub was built,
    its hub ``model`` by default), the cases' summaries, the hub's summary."""
    about = (
        f"Printed by `python scripts/{script} <dinov3 checkout> --json` from the DINOv3 release "
        f"(facebookresearch/dinov3 at {commit}, CPU, {precision}): the released {model}'s outputs on the "
        f"script's cases (mean, RMS and 8 evenly spaced samples of each) and {hub_what or 'its hub ' + model} on the "
        "meta device."
    )
    return json.dumps({"about": about, "cases": cases, "hub": hub}, indent=1)


def print_hub(entry: str, what: str, hub: dict, width: int = 20) -> None:
    """Whether the hub model ``entry`` is as released (``what``: the things compared), then each number of both."""
    print(f"{entry}: {what} as released: {hub['release'] == hub['ours']}")
    for key, value in hub["ours"].items():
        print(f"  {key:<22} release {hub['release'][key]!s:<{width}} ours {value}")


def main() -> int:
    args = release_args(__doc__, "depth")
    logging.getLogger("dinov3").setLevel(logging.ERROR)  # its "does not define input_pad_size" notes
    from dinov3.hub import depthers as released_hub

    from dinov2.hub import depthers as our_hub

    names = ("dinov3_vit7b16_dd", "dinov3_vitl16_chmv2")
    hub = {
        who: hub_summary({n: getattr(module, n) for n in names})
        for who, module in (("release", released_hub), ("ours", our_hub))
    }
    if args.json:
        cases = {name: summary(run_case(name, False)["expected"]) for name in CASES}
        decoders = "its two hub depthers' decoders"
        print(release_json("check_dinov3_depther.py", args.commit, "depther", cases, hub["release"], hub_what=decoders))
        return 0
    for name in names:
        same = hub["release"][name] == hub["ours"][name]
        print(f"{name}: decoder keys, shapes and sizes, taps and depth conversion as released: {same}")
    print(f"{'case':<24} {'output':<18} {'fp32 max|diff|':>15} {'bf16 max|diff|':>15} {'keys':>5} {'init':>5}")
    for name in CASES:
        fp32, bf16 = run_case(name, False), run_case(name, True)
        print(
            f"{name:<24} {str(fp32['shape']):<18} {fp32['max_abs_diff']:>15.3g} {bf16['max_abs_diff']:>15.3g} "
            f"{str(fp32['keys_in_order']):>5} {str(fp32['same_fresh_decoder']):>5}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
