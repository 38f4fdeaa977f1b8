"""Compare the DINOv3 detector here (``dinov2.heads.detection``) with the released one, on small models.

    python scripts/check_dinov3_detector.py /path/to/dinov3-release-checkout

Imports the released ``dinov3`` package from the checkout (run it in an environment with its imports: torch, numpy,
torchvision, torchmetrics, termcolor), builds each case with both codes (the release's ``build_model`` with its hub
settings on a small DINOv3 ViT, smaller where the config allows: width 64, 2 decoder and encoder layers, 10 + 14
queries, 7 classes), gives both the same seeded weights (``scripts.check_dinov3_depther``) and prints, per case, the
largest difference of the raw outputs with all queries as built (final, one-to-many, auxiliary and proposal logits
and boxes), with the one-to-one queries the hub keeps (final and auxiliary), of the post-processed scores, labels and
boxes (``DetectorWithProcessor``) and of the boxes in training mode (the encoder's dropout), in float64 on CPU; whether
the state-dict keys and order agree, and whether a head built after the same ``torch.manual_seed`` starts from the
same weights; then the hub model ``dinov3_vit7b16_de`` built by both on the meta device. With ``--json`` it prints the
numbers ``tests/heads/test_dinov3_detector.py`` keeps from the release.

Float64, not float32: the detector's proposal position embeddings (sines of box coordinates in pixels) multiply a
relative change of the features by about 300, so float32's last-bit differences between two machines would move the
kept numbers by about 1e-4 of their RMS; in float64 they stay below 1e-10.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: the repository root for scripts.*

from dinov2.heads.detection import dinov3 as ours  # noqa: E402
from dinov2.models.vision_transformer_v3 import DinoVisionTransformerV3  # noqa: E402
from scripts import check_dinov3_depther as depther_check  # noqa: E402
from scripts.check_dinov3_depther import VIT, print_hub, release_args, release_json, seeded_state, summary  # noqa: E402

# the hub's head at a small size: every setting is the hub's but these
SMALL = {"hidden_dim": 64, "nheads": 4, "dim_feedforward": 96, "dec_layers": 2, "num_encoder_layers": 2}
SMALL |= {"num_queries_one2one": 10, "num_queries_one2many": 14, "topk": 25, "decoder_rpe_hidden_dim": 32}
SMALL |= {"num_classes": 7}
HUB_SETTINGS = {"num_queries_one2one": 1500, "topk": 1500, "hidden_dim": 768}  # where the hub departs from defaults
# name -> (backbone kwargs, config fields, image sizes [3, H, W] of the batch)
OTHER = {"n_windows_sqrt": 2, "norm_type": "post_norm", "backbone_use_layernorm": True, "layers_to_use": 2}
OTHER |= {"decoder_rpe_type": "abs_log8", "look_forward_twice": False}
CASES = {
    "hub_like_windows3": (VIT, {"n_windows_sqrt": 3}, [(3, 96, 128), (3, 80, 96)]),
    "windows2_post_norm": ({**VIT, "depth": 4}, OTHER, [(3, 112, 80)]),
    "one_level_no_encoder": (
        VIT,
        {"proposal_feature_levels": 1, "proposal_tgt_strides": [16], "add_transformer_encoder": False},
        [(3, 80, 112), (3, 64, 112)],
    ),
}
RAW = ("pred_logits", "pred_boxes", "pred_logits_one2many", "pred_boxes_one2many", "aux_logits", "aux_boxes")
RAW += ("enc_logits", "enc_boxes")
HUB = ("hub_logits", "hub_boxes", "hub_aux_boxes", "scores", "labels", "boxes", "train_boxes")
OUTPUTS = RAW + HUB
HUB_ENTRY = "dinov3_vit7b16_de"
DTYPE = torch.float64  # see the note above


def _quiet():
    """The release logs and warns (apex, meshgrid); keep the table clean."""
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    logging.getLogger("dinov3").setLevel(logging.ERROR)
    return stack


def config(module, name: str):
    """Case ``name``'s config from ``module`` (the release's ``dinov3.eval.detection.config`` or ours), completed as
    the release's hub completes it (strides of the 16-pixel patches; the hub's quarter blocks of 8 unless the case
    says)."""
    fields = {**HUB_SETTINGS, **SMALL, "n_windows_sqrt": 0, "layers_to_use": [1, 3, 5, 7], **CASES[name][1]}
    cfg = module.DetectionHeadConfig(**fields)
    cfg.proposal_in_stride = 16
    cfg.proposal_tgt_strides = cfg.proposal_tgt_strides or [int(m * 16) for m in (0.5, 1, 2, 4)]
    return cfg


def build(config_module, build_module, vit: torch.nn.Module, name: str, seed: int = 3) -> torch.nn.Module:
    """Case ``name``'s detector on ``vit``, built by ``build_module.build_model`` after ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    with _quiet():
        return build_module.build_model(vit, config(config_module, name))


def shared_seeded_state(detector: torch.nn.Module) -> dict[str, torch.Tensor]:
    """:func:`seeded_state`, the decoder's copies of the shared box and class heads given the heads' values."""
    state = seeded_state(detector)
    for key in state:
        if key.startswith(("transformer.decoder.bbox_embed.", "transformer.decoder.class_embed.")):
            state[key] = state[key.removeprefix("transformer.decoder.")]
    return state


def our_detector(name: str) -> torch.nn.Module:
    """Case ``name`` built here, with the seeded weights, in eval mode."""
    detector = build(ours, ours, DinoVisionTransformerV3(**CASES[name][0]), name)
    detector.load_state_dict(shared_seeded_state(detector), strict=True)
    return detector.to(DTYPE).eval()


def case_input(name: str) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [depther_check.seeded_randn(size, g).to(DTYPE) for size in CASES[name][2]]


def outputs(detector: torch.nn.Module, processing: tuple, name: str) -> dict[str, torch.Tensor]:
    """All queries as built, then the hub's one-to-one queries (raw and post-processed by ``processing``, the
    release's or our ``(DetectorWithProcessor, PostProcess)``), then boxes in training mode after
    ``torch.manual_seed(5)``."""
    with_processor, post_process = processing
    images = case_input(name)
    with torch.no_grad(), _quiet():
        out = detector(images)
        got = {key: out[key] for key in RAW[:4]}
        got["aux_logits"] = torch.stack([aux["pred_logits"] for aux in out["aux_outputs"]])
        got["aux_boxes"] = torch.stack([aux["pred_boxes"] for aux in out["aux_outputs"]])
        got["enc_logits"], got["enc_boxes"] = out["enc_outputs"]["pred_logits"], out["enc_outputs"]["pred_boxes"]
        detector.num_queries = detector.num_queries_one2one  # what the hub does for inference
        detector.transformer.two_stage_num_proposals = detector.num_queries
        out = detector(images)
        got["hub_logits"], got["hub_boxes"] = out["pred_logits"], out["pred_boxes"]
        got["hub_aux_boxes"] = torch.stack([aux["pred_boxes"] for aux in out["aux_outputs"]])
        cfg = config(ours, name)
        processed = with_processor(detector, post_process(cfg.topk, cfg.reparam))(images)
        for key in ("scores", "labels", "boxes"):
            got[key] = torch.stack([result[key] for result in processed]).to(DTYPE)
        detector.train()
        detector.backbone[0].eval()  # the ViT stays in eval mode, as the hub sets it
        torch.manual_seed(5)
        got["train_boxes"] = detector(images)["pred_boxes"]
        detector.eval()
    return got


def run_case(name: str) -> dict:
    from dinov3.eval.detection import config as released_config
    from dinov3.eval.detection.models import detr as released
    from dinov3.hub.detectors import DetectorWithProcessor
    from dinov3.models.vision_transformer import DinoVisionTransformer

    theirs = build(released_config, released, DinoVisionTransformer(**CASES[name][0]), name)
    theirs.load_state_dict(shared_seeded_state(theirs), strict=True)
    theirs.to(DTYPE).eval()
    mine = our_detector(name)
    keys_in_order = list(theirs.state_dict()) == list(mine.state_dict())
    expected = outputs(theirs, (DetectorWithProcessor, released.PostProcess), name)
    got = outputs(mine, (ours.DetectorWithProcessor, ours.PostProcess), name)
    fresh_theirs = build(released_config, released, DinoVisionTransformer(**CASES[name][0]), name).state_dict()
    fresh_mine = build(ours, ours, DinoVisionTransformerV3(**CASES[name][0]), name).state_dict()
    windows = CASES[name][1].get("n_windows_sqrt", 0) > 0
    head_keys = [key for key in fresh_theirs if not key.startswith(ours.backbone_prefix(windows))]
    return {
        "max_abs_diff": {k: (expected[k] - got[k]).abs().max().item() for k in OUTPUTS},
        "shapes": {k: list(expected[k].shape) for k in OUTPUTS},
        "keys_in_order": keys_in_order,
        "same_fresh_head": all(k in fresh_mine and torch.equal(fresh_theirs[k], fresh_mine[k]) for k in head_keys),
        "expected": expected,
    }


def hub_summary(entry_point) -> dict:
    """The hub detector built on the meta device (no weights): head parameters (all but the ViT), the sha256 of the
    head's keys and shapes in order, key counts, the backbone's windows and blocks, queries, what trains and what is
    in training mode."""
    with torch.device("meta"), _quiet():
        model = entry_point(pretrained=False)
    detector = model.detector
    windowed = detector.backbone[0]
    vit = windowed._backbone.backbone
    prefix = ours.backbone_prefix(True)
    keys = [(k, list(v.shape)) for k, v in detector.state_dict().items() if not k.startswith(prefix)]
    vit_ids = {id(p) for p in vit.parameters()}
    return {
        "head_parameters": sum(p.numel() for p in detector.parameters() if id(p) not in vit_ids),
        "head_keys_sha256": hashlib.sha256(json.dumps(keys).encode()).hexdigest()[:16],
        "head_keys": len(keys),
        "model_keys": len(model.state_dict()),
        "windows": [windowed._n_windows_h, windowed._n_windows_w],
        "layers_to_use": list(windowed._backbone.layers_to_use),
        "input_channels": detector.input_proj[0][0].in_channels,
        "queries": [detector.num_queries, detector.num_queries_one2one, detector.transformer.two_stage_num_proposals],
        "topk": model.postprocessor.topk,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "backbone_frozen": not any(p.requires_grad for p in vit.parameters()),
        "training": [model.training, detector.training, vit.training],
    }


def main() -> int:
    args = release_args(__doc__, "detection")
    with _quiet():
        from dinov3.hub import detectors as released_hub

    from dinov2.hub import detectors as our_hub

    hub = {"release": hub_summary(released_hub.dinov3_vit7b16_de), "ours": hub_summary(our_hub.dinov3_vit7b16_de)}
    if args.json:
        cases = {name: {k: summary(v) for k, v in run_case(name)["expected"].items()} for name in CASES}
        hub_release = {HUB_ENTRY: hub["release"]}
        print(release_json("check_dinov3_detector.py", args.commit, "detector", cases, hub_release, "float64"))
        return 0
    print_hub(HUB_ENTRY, "head keys, shapes and sizes, windows, blocks, queries, frozen backbone", hub, width=24)
    results = {name: run_case(name) for name in CASES}
    print(f"{'output':<22} " + " ".join(f"{name:>22}" for name in CASES) + "   (max |difference|, float64)")
    for output in OUTPUTS:
        print(f"{output:<22} " + " ".join(f"{results[n]['max_abs_diff'][output]:>22.3g}" for n in CASES))
    print(f"{'keys in order':<22} " + " ".join(f"{results[n]['keys_in_order']!s:>22}" for n in CASES))
    print(f"{'same seeded head':<22} " + " ".join(f"{results[n]['same_fresh_head']!s:>22}" for n in CASES))
    for name, result in results.items():
        print(f"  {name}: " + ", ".join(f"{k} {v}" for k, v in result["shapes"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
