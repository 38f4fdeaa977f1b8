"""Hub depthers: released names, kwargs and file format; strict loading from local files; clear errors."""

from __future__ import annotations

import pytest
import torch

import hubconf
from dinov2.hub import catalog, depthers
from dinov2.hub.depthers import Weights
from tests.conftest import load_reference
from tests.heads.depth_reference import case_input, case_state_dict, tolerance

NAMES = [f"dinov2_vit{a}14_{h}" for a in "sblg" for h in ("ld", "dd")]


def test_hubconf_exports_the_depthers():
    assert all(getattr(hubconf, name) is getattr(depthers, name) for name in NAMES)


def _reference_case(name: str):
    reference = load_reference("depth_heads.pt")
    case = reference["cases"][name]
    return case, case_state_dict(case, reference["meta"]["seed"]), case_input(name, case, reference["meta"]["seed"])


def _head_only(state_dict: dict) -> dict:
    return {k: v for k, v in state_dict.items() if k.startswith("decode_head.")}


@pytest.mark.parametrize("name", ["pub_s_ld4", "pub_s_dd"])
def test_released_head_file_format_loads_strictly_with_a_local_backbone(tmp_path, name):
    case, state_dict, image = _reference_case(name)
    backbone = {k.removeprefix("backbone."): v for k, v in state_dict.items() if k.startswith("backbone.")}
    torch.save({"meta": {"iter": 38400}, "state_dict": _head_only(state_dict)}, tmp_path / "head.pth")
    torch.save(backbone, tmp_path / "backbone.pth")
    model = getattr(hubconf, case["entry"])(
        **case["kwargs"] | {"pretrained": True}, weights=str(tmp_path / "head.pth"),
        backbone_weights=str(tmp_path / "backbone.pth"),
    )  # fmt: skip
    with torch.inference_mode():
        out = model.eval().whole_inference(image, img_meta=None, rescale=True)
    assert (out - case["output"]).abs().max().item() <= tolerance(case)


def test_whole_model_file_and_pretrained_false(tmp_path):
    case, state_dict, image = _reference_case("pub_s_ld1")
    torch.save(state_dict, tmp_path / "whole.pth")  # backbone.* + decode_head.*, no "state_dict" wrapper
    model = hubconf.dinov2_vits14_ld(layers=1, pretrained=False, weights=tmp_path / "whole.pth")
    with torch.inference_mode():
        out = model(image)
    assert (out - case["output"]).abs().max().item() <= tolerance(case)


def test_a_head_file_that_does_not_fit_is_an_error_naming_the_key(tmp_path):
    _, state_dict, _ = _reference_case("pub_s_ld4")
    head = _head_only(state_dict)
    torch.save({"state_dict": {**head, "decode_head.extra.weight": torch.zeros(1)}}, tmp_path / "extra.pth")
    with pytest.raises(RuntimeError, match=r"decode_head.*extra\.weight"):
        hubconf.dinov2_vits14_ld(layers=4, pretrained=False, weights=str(tmp_path / "extra.pth"))
    with pytest.raises(RuntimeError, match=r"shape mismatch.*conv_depth\.weight"):  # a 4-layer head, 1-layer model
        torch.save({"state_dict": head}, tmp_path / "head4.pth")
        hubconf.dinov2_vits14_ld(layers=1, pretrained=False, weights=str(tmp_path / "head4.pth"))
    torch.save({"state_dict": {"auxiliary_head.w": torch.zeros(1)}}, tmp_path / "aux.pth")
    with pytest.raises(RuntimeError, match="auxiliary_head.w"):
        hubconf.dinov2_vits14_dd(pretrained=False, weights=str(tmp_path / "aux.pth"))


def test_released_kwargs_and_defaults():
    with torch.device("meta"):
        ld1 = hubconf.dinov2_vitl14_ld(layers=1, pretrained=False)
        ld4 = hubconf.dinov2_vitl14_ld(pretrained=False, weights="KITTI")
        dd_kitti = depthers._make_dinov2_dpt_depther(arch_name="vit_small", pretrained=False, weights=Weights.KITTI)
        dd_range = hubconf.dinov2_vits14_dd(pretrained=False, depth_range=(0.5, 20.0))
        ld_range = hubconf.dinov2_vits14_ld(pretrained=False, depth_range=(0.001, 10.0))
        giant = hubconf.dinov2_vitg14_dd(pretrained=False)
    assert ld1.out_index == [23] and ld4.out_index == [4, 11, 17, 23] and giant.out_index == [9, 19, 29, 39]
    assert (ld4.decode_head.min_depth, ld4.decode_head.max_depth) == (0.001, 80.0)  # released linear bins
    assert (dd_kitti.decode_head.min_depth, dd_kitti.decode_head.max_depth) == (0.001, 10.0)  # not pretrained
    assert dd_range.decode_head.max_depth == 20.0 and ld_range.decode_head.max_depth == 10.0  # explicit: honoured
    assert depthers._get_depth_range(True, Weights.KITTI) == (0.001, 80.0)
    assert depthers._get_depth_range(True, Weights.NYU) == (0.001, 10.0)
    assert giant.backbone.blocks[0].mlp.w3.in_features == 4096  # SwiGLU
    with pytest.raises(ValueError, match="layers: 3"):
        hubconf.dinov2_vits14_ld(layers=3, pretrained=False)
    with pytest.raises(ValueError, match="NYU, KITTI"):
        hubconf.dinov2_vits14_dd(pretrained=False, weights="SUNRGBD")


def test_released_urls_and_offline_error(monkeypatch, tmp_path):
    assert depthers._head_url("vit_base", Weights.KITTI, "linear4").endswith(
        "/dinov2_vitb14/dinov2_vitb14_kitti_linear4_head.pth"
    )
    assert depthers._head_url("vit_giant2", Weights.NYU, "dpt").endswith(
        "/dinov2_vitg14/dinov2_vitg14_nyu_dpt_head.pth"
    )
    monkeypatch.setattr(catalog, "DINOV2_BASE_URL", "http://127.0.0.1:9/dinov2")  # nothing listens there
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache (set_dir would outlive the test)
    with pytest.raises(RuntimeError, match=r"weights='/path/to/dinov2_vits14_nyu_linear_head.pth'"):
        hubconf.dinov2_vits14_ld(layers=1)


def test_a_probe_head_file_gives_the_hub_its_size_and_range(tmp_path):
    """Head files of ``python -m dinov2.eval.depth`` record the head's size and range: the depther builds that head
    (a released file records neither: 256 bins / channels, the released ranges)."""
    from dinov2.eval.dense.probe import save_head
    from dinov2.heads.depth.dpt import DPTHead
    from dinov2.heads.depth.linear import LinearDepthHead

    heads = {"ld": LinearDepthHead(384, 4, n_bins=64, max_depth=10.0), "dd": DPTHead(384, channels=16, max_depth=10.0)}
    sizes = {"ld": {"n_bins": 64}, "dd": {"channels": 16}}
    for kind, head in heads.items():
        save_head(head, tmp_path / f"{kind}.pth", {"depth_range": [0.001, 10.0], **sizes[kind]})
        model = getattr(hubconf, f"dinov2_vits14_{kind}")(pretrained=False, weights=str(tmp_path / f"{kind}.pth"))
        state = model.decode_head.state_dict()
        assert all(torch.equal(state[k], v) for k, v in head.state_dict().items())
        assert (model.decode_head.min_depth, model.decode_head.max_depth) == (0.001, 10.0)


def test_released_linear_heads_decode_over_their_training_range(monkeypatch, tmp_path):
    """The released NYU linear heads decode over NYU's 0.001..10 m, as the probe recipe trains (the release's
    builder hard-codes 0.001..80, ~8x too deep for NYU); KITTI heads over 0.001..80, as released."""
    from dinov2.eval.dense.probe import load_recipe
    from dinov2.eval.depth.probe import CONFIG_DIR

    case, state_dict, image = _reference_case("pub_s_ld4")
    backbone = {k.removeprefix("backbone."): v for k, v in state_dict.items() if k.startswith("backbone.")}
    torch.save(backbone, tmp_path / "backbone.pth")
    urls = []

    def released_file(url):  # stands in for the download of the released head file
        urls.append(url)
        return _head_only(state_dict), {}

    monkeypatch.setattr(depthers, "read_dense_checkpoint", released_file)
    ranges = {}
    for weights, kwargs in [("KITTI", {}), ("NYU", {"depth_range": (0.001, 80.0)}), ("NYU", {})]:
        model = hubconf.dinov2_vits14_ld(weights=weights, backbone_weights=str(tmp_path / "backbone.pth"), **kwargs)
        ranges[weights + ("_release" if kwargs else "")] = (model.decode_head.min_depth, model.decode_head.max_depth)
    assert urls[-1].endswith("dinov2_vits14_nyu_linear4_head.pth")
    assert ranges["NYU"] == depthers.RELEASED_LINEAR_DEPTH_RANGE[Weights.NYU] == (0.001, 10.0)
    assert ranges["KITTI"] == ranges["NYU_release"] == (0.001, 80.0)  # explicit: the release's numbers
    with torch.inference_mode():
        out = model.eval().whole_inference(image, img_meta=None, rescale=True)
    # the same bin probabilities over bins 0.001 + k (max - 0.001) / 255: the release's depths rescaled to 10 m
    rescaled = 0.001 + (case["output"] - 0.001) * (10.0 - 0.001) / (80.0 - 0.001)
    assert (out - rescaled).abs().max().item() <= tolerance(case)
    # the linear probe recipes train and test over the same NYU range (KITTI: head.max_depth=80)
    for recipe in ("linear1", "linear4"):
        cfg = load_recipe(CONFIG_DIR, recipe)
        assert (cfg.head.min_depth, cfg.head.max_depth) == (cfg.test.min_depth, cfg.test.max_depth) == (0.001, 10.0)
