"""Hub segmentors: the 16 released names, head shapes, strict loading of files with the released keys, the
released test pipelines, offline behaviour."""

from __future__ import annotations

import pytest
import torch

import hubconf
from dinov2.hub import catalog, segmentors

EMBED = {"s": 384, "b": 768, "l": 1024, "g": 1536}
NAMES = [f"dinov2_vit{a}14_{d}_{h}" for a in "sblg" for d in ("ade20k", "voc2012") for h in ("linear", "ms")]


def _released_head_file(path, num_classes: int, channels: int, seed: int = 0) -> dict:
    """A file laid out as the released ``*_head.pth`` (mmcv checkpoint with ``decode_head.*`` keys)."""
    g = torch.Generator().manual_seed(seed)
    state = {
        "decode_head.conv_seg.weight": 0.01 * torch.randn(num_classes, channels, 1, 1, generator=g),
        "decode_head.conv_seg.bias": torch.randn(num_classes, generator=g),
        "decode_head.bn.weight": 1 + 0.1 * torch.randn(channels, generator=g),
        "decode_head.bn.bias": torch.randn(channels, generator=g),
        "decode_head.bn.running_mean": torch.randn(channels, generator=g),
        "decode_head.bn.running_var": torch.rand(channels, generator=g) + 0.5,
        "decode_head.bn.num_batches_tracked": torch.tensor(40000),
    }
    torch.save({"meta": {"mmseg_version": "0.27.0"}, "state_dict": state}, path)
    return state


def test_sixteen_entry_points_with_released_head_shapes():
    assert all(getattr(hubconf, name) is getattr(segmentors, name) for name in NAMES)
    for name in NAMES:
        arch, dataset, head = name.removeprefix("dinov2_vit").split("_")
        with torch.device("meta"):
            model = getattr(hubconf, name)(pretrained=False)
        classes = 150 if dataset == "ade20k" else 21
        channels = EMBED[arch[0]] * (4 if head == "ms" else 1)
        assert model.decode_head.conv_seg.weight.shape == (classes, channels, 1, 1), name
        assert len(model.class_names) == len(model.palette) == classes
        depth = model.backbone.n_blocks
        assert model.out_index == list(range(depth - (4 if head == "ms" else 1), depth))


def test_released_test_pipelines():
    with torch.device("meta"):
        linear = hubconf.dinov2_vitb14_ade20k_linear(pretrained=False)
        ms = hubconf.dinov2_vitb14_voc2012_ms(pretrained=False)
    assert (linear.test_cfg.short_side, linear.test_cfg.crop_size, linear.test_cfg.stride) == (
        512,
        (512, 512),
        (341,) * 2,
    )
    assert linear.test_cfg.ratios == (1.0,) and not linear.test_cfg.flip and linear.test_cfg.mode == "slide"
    assert (ms.test_cfg.short_side, ms.test_cfg.crop_size, ms.test_cfg.stride) == (640, (640, 640), (320, 320))
    assert ms.test_cfg.ratios == (1.0, 1.32, 1.73, 2.28, 3.0) and ms.test_cfg.flip


def test_head_file_loads_strictly_and_predicts(tmp_path):
    state = _released_head_file(tmp_path / "head.pth", 21, 4 * 384)
    model = hubconf.dinov2_vits14_voc2012_ms(pretrained=False, weights=str(tmp_path / "head.pth"))
    loaded = model.decode_head.state_dict()
    assert all(torch.equal(loaded[k.removeprefix("decode_head.")], v) for k, v in state.items())
    assert not model.training
    image = torch.randn(1, 3, 30, 41)
    with torch.no_grad():
        classes, probs = model.predict(image, return_probabilities=True, short_side=28, ratios=(1.0,), flip=True)
    assert classes.shape == (1, 30, 41) and probs.shape == (1, 21, 30, 41) and classes.max() < 21
    assert torch.allclose(probs.sum(1), torch.ones(1, 30, 41), atol=1e-5)


def test_the_number_of_classes_comes_from_the_head_file(tmp_path):
    _released_head_file(tmp_path / "five.pth", 5, 384)
    model = hubconf.dinov2_vits14_voc2012_linear(pretrained=False, weights=tmp_path / "five.pth")
    assert model.num_classes == 5 and model.class_names == ("0", "1", "2", "3", "4") and len(model.palette) == 5


def test_head_file_that_does_not_fit(tmp_path):
    _released_head_file(tmp_path / "ade_ms.pth", 150, 4 * 384)
    with pytest.raises(RuntimeError, match=r"shape mismatch.*conv_seg\.weight"):  # an ms head (4 blocks), linear model
        hubconf.dinov2_vits14_ade20k_linear(pretrained=False, weights=tmp_path / "ade_ms.pth")
    torch.save({"state_dict": {"decode_head.conv_seg.weight": torch.zeros(150, 384, 1, 1)}}, tmp_path / "part.pth")
    with pytest.raises(RuntimeError, match=r"missing keys \['decode_head.bn.bias'"):
        hubconf.dinov2_vits14_ade20k_linear(pretrained=False, weights=tmp_path / "part.pth")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        hubconf.dinov2_vits14_ade20k_linear(weights=str(tmp_path / "nope.pth"))


def test_released_url_and_offline_error(monkeypatch, tmp_path):
    monkeypatch.setattr(catalog, "DINOV2_BASE_URL", "http://127.0.0.1:9/dinov2")  # nothing listens there
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache (set_dir would outlive the test)
    with pytest.raises(RuntimeError, match=r"weights='/path/to/dinov2_vitl14_ade20k_ms_head.pth'"):
        hubconf.dinov2_vitl14_ade20k_ms()


def test_torch_hub_load_from_a_local_checkout():
    from tests.conftest import REPO_ROOT

    segmentor = torch.hub.load(str(REPO_ROOT), "dinov2_vits14_voc2012_linear", source="local", pretrained=False)
    depther = torch.hub.load(str(REPO_ROOT), "dinov2_vits14_ld", source="local", pretrained=False, layers=1)
    assert segmentor.num_classes == 21 and depther.out_index == [11]
