"""Compare the DINOv3 segmentor here (``dinov2.heads.segmentation.dinov3``) with the released one, on small models.

    python scripts/check_dinov3_segmentor.py /path/to/dinov3-release-checkout

Imports the released ``dinov3`` package from the checkout (run it in an environment with its imports: torch, numpy,
torchmetrics, termcolor), builds each case with both codes (the release's ``build_segmentation_decoder`` on a small
DINOv3 ViT: with ``decoder_type="m2f"`` the adapter and the Mask2Former head keep their released sizes but
``hidden_dim`` and the classes; with ``"linear"``, the linear decoder), gives both the same seeded weights
(``scripts.check_dinov3_depther``) and prints, per case, the largest difference of ``forward``'s outputs (m2f:
``pred_logits``, ``pred_masks`` and the 9 auxiliary predictions; linear: the logits, in eval mode), of ``predict``'s
resized masks (logits) and of the masks (logits) in training mode (drop path, dropout, batch statistics), in
float64 on CPU (where the release's CUDA autocast is off; ``Tensor.float()`` leaves float64 alone meanwhile, see
``DTYPE``), whether the state-dict keys and order agree, and whether an adapter and head built after the same
``torch.manual_seed`` start from the same weights; then the hub model ``dinov3_vit7b16_ms`` built by both on the
meta device. With ``--json`` it prints the numbers ``tests/heads/test_dinov3_segmentor.py`` keeps from the release.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: the repository root for scripts.*

from dinov2.heads.segmentation import dinov3 as ours  # noqa: E402
from dinov2.models.vision_transformer_v3 import DinoVisionTransformerV3  # noqa: E402
from scripts import check_dinov3_depther as depther_check  # noqa: E402
from scripts.check_dinov3_depther import VIT, print_hub, release_args, release_json, seeded_state, summary  # noqa: E402

# name -> (backbone kwargs, build_segmentation_decoder kwargs, input size, predict's rescale_to)
FOUR_LAST = {"hidden_dim": 32, "num_classes": 3, "backbone_out_layers": "FOUR_LAST"}
RELEASED_CLASSES = {"hidden_dim": 32, "num_classes": 150}
CASES = {
    "vit64_even_taps": (VIT, {"hidden_dim": 64, "num_classes": 5}, (2, 3, 64, 96), (40, 56)),
    "vit128_four_last": ({**VIT, "embed_dim": 128}, FOUR_LAST, (1, 3, 96, 64), (96, 64)),
    # 64 x 96, not 32 x 64: there the coarsest map is 1 x 2 and its group norm (1 channel a group) over 2 values
    # multiplies float32's last-bit differences between machines past the test's tolerance
    "vit64_12_blocks": ({**VIT, "depth": 12}, RELEASED_CLASSES, (3, 3, 64, 96), (64, 96)),
    # the linear decoder (the release's default decoder_type)
    "linear_vit64_even_taps": (VIT, {"decoder_type": "linear", "num_classes": 5}, (2, 3, 64, 96), (40, 56)),
    "linear_vit128_last": (
        {**VIT, "embed_dim": 128},
        {"decoder_type": "linear", "num_classes": 3, "backbone_out_layers": "LAST", "dropout": 0.3},
        (1, 3, 96, 64),
        (96, 64),
    ),
}
OUTPUTS = ("pred_logits", "pred_masks", "aux_logits", "aux_masks", "predict_masks")
LINEAR_OUTPUTS = ("logits", "predict_logits")
HUB_ENTRY = "dinov3_vit7b16_ms"
# The outputs are compared in float64: in float32 the Mask2Former cases move by up to 1e-5 of their RMS between two
# machines (other SIMD kernels, other last bits), the kept numbers' tolerance.
DTYPE = torch.float64


def _quiet():
    """The release prints the adapter's sizes and warns that CUDA autocast is off on CPU; keep the table clean."""
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    return stack


def build_kwargs(module, name: str) -> dict:
    """Case ``name``'s ``build_segmentation_decoder`` arguments for ``module`` (the release's or ours)."""
    kwargs = {"decoder_type": "m2f", **CASES[name][1]}
    if isinstance(kwargs.get("backbone_out_layers"), str):
        kwargs["backbone_out_layers"] = module.BackboneLayersSet(kwargs["backbone_out_layers"])
    return kwargs


def build(module, backbone: torch.nn.Module, name: str, seed: int = 3) -> torch.nn.Module:
    """Case ``name``'s segmentor on ``backbone``, built by ``module`` after ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    with _quiet():
        return module.build_segmentation_decoder(backbone, **build_kwargs(module, name))


def our_segmentor(name: str) -> ours.FeatureDecoder:
    """Case ``name`` built here, with the seeded weights."""
    segmentor = build(ours, DinoVisionTransformerV3(**CASES[name][0]), name)
    segmentor.load_state_dict(seeded_state(segmentor), strict=True)
    return segmentor


@contextlib.contextmanager
def _float64_kept():
    """``Tensor.float()`` leaves float64 tensors as they are (both codes cast the pixel decoder's input with it), so
    that a segmentor in float64 runs in float64 throughout; other tensors convert as usual."""
    original = torch.Tensor.float

    def to_float(self, *args, **kwargs):
        return self if self.dtype == torch.float64 else original(self, *args, **kwargs)

    torch.Tensor.float = to_float
    try:
        yield
    finally:
        torch.Tensor.float = original


def case_input(name: str) -> torch.Tensor:
    return depther_check.seeded_randn(CASES[name][2], torch.Generator().manual_seed(1))


def is_linear(name: str) -> bool:
    return CASES[name][1].get("decoder_type") == "linear"


def case_outputs(name: str) -> tuple[str, ...]:
    return LINEAR_OUTPUTS if is_linear(name) else OUTPUTS


def outputs(segmentor: torch.nn.Module, name: str) -> dict[str, torch.Tensor]:
    """``forward``'s final and auxiliary predictions (the 9 stacked) and ``predict``'s resized masks; for the linear
    decoder its logits and ``predict``'s resized logits, in eval mode (no dropout, running statistics), in
    ``DTYPE`` (``segmentor`` is converted)."""
    x = case_input(name).to(DTYPE)
    segmentor.to(DTYPE)
    if is_linear(name):
        segmentor.eval()
    with torch.no_grad(), _quiet(), _float64_kept():
        out = segmentor(x)
        predicted = segmentor.predict(x, rescale_to=CASES[name][3])
    if is_linear(name):
        return {"logits": out, "predict_logits": predicted}
    return {
        "pred_logits": out["pred_logits"],
        "pred_masks": out["pred_masks"],
        "aux_logits": torch.stack([aux["pred_logits"] for aux in out["aux_outputs"]]),
        "aux_masks": torch.stack([aux["pred_masks"] for aux in out["aux_outputs"]]),
        "predict_masks": predicted["pred_masks"],
    }


def train_masks(segmentor: torch.nn.Module, name: str) -> torch.Tensor:
    """``pred_masks`` (the linear decoder: its logits) in training mode (the adapter's drop path, the linear
    decoder's dropout, batch statistics) after ``torch.manual_seed(5)``, in ``DTYPE``."""
    segmentor.to(DTYPE).train()
    torch.manual_seed(5)
    with torch.no_grad(), _quiet(), _float64_kept():
        out = segmentor(case_input(name).to(DTYPE))
    return out if is_linear(name) else out["pred_masks"]


def run_case(name: str) -> dict:
    from dinov3.eval.segmentation import models as released
    from dinov3.models.vision_transformer import DinoVisionTransformer

    theirs = build(released, DinoVisionTransformer(**CASES[name][0]), name)
    theirs.load_state_dict(seeded_state(theirs), strict=True)
    mine = our_segmentor(name)
    expected, got = outputs(theirs, name), outputs(mine, name)
    train_diff = (train_masks(theirs, name) - train_masks(mine, name)).abs().max().item()
    fresh_theirs = build(released, DinoVisionTransformer(**CASES[name][0]), name).state_dict()
    fresh_mine = build(ours, DinoVisionTransformerV3(**CASES[name][0]), name).state_dict()
    prefix = ours.LINEAR_BACKBONE_PREFIX if is_linear(name) else ours.BACKBONE_PREFIX
    head_keys = [key for key in fresh_theirs if not key.startswith(prefix)]
    return {
        "max_abs_diff": {k: (expected[k] - got[k]).abs().max().item() for k in case_outputs(name)},
        "train_masks_max_abs_diff": train_diff,
        "shapes": {k: list(expected[k].shape) for k in case_outputs(name)},
        "keys_in_order": list(theirs.state_dict()) == list(mine.state_dict()),
        "same_fresh_head": all(k in fresh_mine and torch.equal(fresh_theirs[k], fresh_mine[k]) for k in head_keys),
        "expected": expected,
    }


def hub_summary(entry_point) -> dict:
    """The hub segmentor built on the meta device (no weights): adapter (without the backbone) and head parameters,
    the sha256 of the non-backbone keys and shapes in order, the whole model's key count, the taps, what trains."""
    with torch.device("meta"), _quiet():
        model = entry_point(pretrained=False)
    adapter, head = model.segmentation_model
    keys = [(k, list(v.shape)) for k, v in model.state_dict().items() if not k.startswith(ours.BACKBONE_PREFIX)]
    backbone = {id(p) for p in adapter.backbone.parameters()}
    return {
        "adapter_parameters": sum(p.numel() for p in adapter.parameters() if id(p) not in backbone),
        "head_parameters": sum(p.numel() for p in head.parameters()),
        "decoder_keys_sha256": hashlib.sha256(json.dumps(keys).encode()).hexdigest()[:16],
        "model_keys": len(model.state_dict()),
        "taps": list(adapter.interaction_indexes),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "backbone_frozen": not any(p.requires_grad for p in adapter.backbone.parameters()),
        "training": [model.training, adapter.training, head.training],
    }


def main() -> int:
    args = release_args(__doc__, "segmentation")
    with _quiet():
        from dinov3.hub import segmentors as released_hub

    from dinov2.hub import segmentors as our_hub

    hub = {"release": hub_summary(released_hub.dinov3_vit7b16_ms), "ours": hub_summary(our_hub.dinov3_vit7b16_ms)}
    if args.json:
        cases = {name: {k: summary(v) for k, v in run_case(name)["expected"].items()} for name in CASES}
        hub_release = {HUB_ENTRY: hub["release"]}
        print(release_json("check_dinov3_segmentor.py", args.commit, "segmentor", cases, hub_release, "float64"))
        return 0
    print_hub(HUB_ENTRY, "adapter and head keys, shapes and sizes, taps, frozen backbone", hub)
    results = {name: run_case(name) for name in CASES}
    for kind, names in (
        ("m2f", [n for n in CASES if not is_linear(n)]),
        ("linear", [n for n in CASES if is_linear(n)]),
    ):
        header = " ".join(f"{k:>14}" for k in (*case_outputs(names[0]), "train"))
        print(f"{kind + ' case':<24} {header} {'keys':>5} {'init':>5}   (max |difference|, float64)")
        for name in names:
            result = results[name]
            diffs = " ".join(f"{result['max_abs_diff'][k]:>14.3g}" for k in case_outputs(name))
            train = f"{result['train_masks_max_abs_diff']:>14.3g}"
            print(f"{name:<24} {diffs} {train} {result['keys_in_order']!s:>5} {result['same_fresh_head']!s:>5}")
    for name, result in results.items():
        print(f"  {name}: " + ", ".join(f"{k} {v}" for k, v in result["shapes"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
