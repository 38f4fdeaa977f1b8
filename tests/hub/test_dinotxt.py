"""The dino.txt hub entry point: released URLs, no download with pretrained=False or local files, strict loading."""

from __future__ import annotations

import pytest
import torch

import hubconf
from dinov2.hub import dinotxt
from dinov2.models import weights
from dinov2.models.weights import WeightsMismatchError
from tests.text.helpers import TINY_TEXT


def _no_download(url, **kwargs):
    raise AssertionError(f"unexpected download of {url}")


def test_hubconf_exports_and_released_urls():
    assert hubconf.dinov2_vitl14_reg4_dinotxt_tet1280d20h24l is dinotxt.dinov2_vitl14_reg4_dinotxt_tet1280d20h24l
    assert hubconf.get_tokenizer is dinotxt.get_tokenizer
    base = "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_reg4_dinotxt_tet1280d20h24l"
    assert dinotxt.VISION_HEAD_URL == base + "_vision_head.pth"
    assert dinotxt.TEXT_ENCODER_URL == base + "_text_encoder.pth"


def test_released_model_without_weights_never_downloads(monkeypatch):
    monkeypatch.setattr(weights, "download", _no_download)
    with torch.device("meta"):
        model = dinotxt.dinov2_vitl14_reg4_dinotxt_tet1280d20h24l(pretrained=False)
    assert not model.training and model.visual_model.backbone.num_register_tokens == 4
    assert model.text_model.backbone.num_layers == 24


def _small(**files):
    return dinotxt.make_dinotxt(
        "dinov2_vits14_reg", TINY_TEXT, pretrained=False, backbone_weights=None, **files
    )  # ViT-S/14 reg backbone (random), tiny text tower


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    torch.manual_seed(0)
    source = _small(vision_head_weights=None, text_encoder_weights=None)
    folder = tmp_path_factory.mktemp("dinotxt")
    head, text = folder / "vision_head.pth", folder / "text_encoder.pth"
    torch.save(source.visual_model.head.state_dict(), head)
    torch.save(source.text_model.state_dict(), text)
    return source, head, text


def test_local_files_load_strictly_without_download(monkeypatch, files):
    source, head, text = files
    monkeypatch.setattr(weights, "download", _no_download)
    model = _small(vision_head_weights=head, text_encoder_weights=text)
    for name, tensor in source.text_model.state_dict().items():
        assert torch.equal(model.text_model.state_dict()[name], tensor), name
    for name, tensor in source.visual_model.head.state_dict().items():
        assert torch.equal(model.visual_model.head.state_dict()[name], tensor), name


def test_a_file_of_another_layout_is_refused(files, tmp_path):
    source, head, _ = files
    renamed = {k.replace("block_list.", "blocks."): v for k, v in source.visual_model.head.state_dict().items()}
    torch.save(renamed, tmp_path / "r3_layout.pth")
    with pytest.raises(WeightsMismatchError, match="block_list"):
        _small(vision_head_weights=tmp_path / "r3_layout.pth", text_encoder_weights=None)
    with pytest.raises(FileNotFoundError, match="text_encoder_weights"):
        _small(vision_head_weights=head, text_encoder_weights=tmp_path / "missing.pth")
