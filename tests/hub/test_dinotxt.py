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


# ------------------------------------------------------------------------------------------------ DINOv3's dino.txt
V3_SMALL_TEXT = dict(TINY_TEXT, dim=64, num_heads=4, num_layers=2)


def _v3_small(weights=dinotxt.DINOTxtWeights.LVTD2300M, **kwargs):
    options = dict(pretrained=False, weights=weights, backbone_weights=None) | kwargs
    return dinotxt.make_dinov3_dinotxt("dinov3_vits16", V3_SMALL_TEXT, **options)  # ViT-S/16, tiny text tower


@pytest.fixture(scope="module")
def v3_file(tmp_path_factory):
    """The release's one-file layout (``visual_model.head.blocks.*``, ``text_model.*``, ``logit_scale``) of a small
    random model, and that model."""
    torch.manual_seed(0)
    source = _v3_small()
    with torch.no_grad():
        source.logit_scale.fill_(4.2)
    state = {
        k.replace("visual_model.head.block_list.", "visual_model.head.blocks."): v
        for k, v in source.state_dict().items()
        if not k.startswith("visual_model.backbone.")
    }
    path = tmp_path_factory.mktemp("dinotxt_v3") / "dinov3_vits16_dinotxt-0a1b2c3d.pth"
    torch.save(state, path)
    return source, path, state


def test_the_dinov3_entry_point_has_the_released_signature_and_gated_files(monkeypatch, tmp_path):
    import inspect

    assert hubconf.dinov3_vitl16_dinotxt_tet1280d20h24l is dinotxt.dinov3_vitl16_dinotxt_tet1280d20h24l
    parameters = inspect.signature(dinotxt.dinov3_vitl16_dinotxt_tet1280d20h24l).parameters
    assert list(parameters) == ["pretrained", "weights", "backbone_weights", "bpe_path_or_url", "check_hash"]
    vocab = "https://dl.fbaipublicfiles.com/dinov3/thirdparty/bpe_simple_vocab_16e6.txt.gz"
    assert parameters["bpe_path_or_url"].default == vocab
    monkeypatch.setattr(weights, "download", _no_download)
    with pytest.raises(ValueError, match="licence form.*dinov3_vitl16_pretrain_lvd1689m"):
        dinotxt.dinov3_vitl16_dinotxt_tet1280d20h24l()  # the backbone's file first
    with pytest.raises(ValueError, match="licence form.*dinov3_vitl16_dinotxt_vision_head_and_text_encoder-a442d8f5"):
        _v3_small(pretrained=True, backbone_weights=_v3_backbone_file(tmp_path))


def _v3_backbone_file(folder) -> str:
    from dinov2.hub.dinov3_backbones import dinov3_vits16

    path = folder / "dinov3_vits16_pretrain_lvd1689m-08c60483.pth"  # the released file name
    torch.save(dinov3_vits16(pretrained=False).state_dict(), path)
    return str(path)


def test_the_dinov3_model_without_weights_never_downloads(monkeypatch):
    monkeypatch.setattr(weights, "download", _no_download)
    if dinotxt.find_vocab() is None:
        pytest.skip("no installed package ships the CLIP vocabulary (pip install open_clip_torch)")
    with torch.device("meta"):
        model, tokenizer = dinotxt.dinov3_vitl16_dinotxt_tet1280d20h24l(pretrained=False)
    assert not model.training and model.visual_model.backbone.n_storage_tokens == 4
    assert model.text_model.backbone.num_layers == 24 and tokenizer.tokenize("a dog").shape == (1, 77)


def test_the_released_dinov3_layout_loads_strictly_with_its_logit_scale(monkeypatch, v3_file):
    source, path, _ = v3_file
    monkeypatch.setattr(weights, "download", _no_download)
    model = _v3_small(weights=path)
    assert model.logit_scale.item() == pytest.approx(4.2)
    trained = {k: v for k, v in source.state_dict().items() if not k.startswith("visual_model.backbone.")}
    for name, tensor in trained.items():
        assert torch.equal(model.state_dict()[name], tensor), name
    tokens = torch.randint(1, 49000, (2, 77))
    torch.testing.assert_close(model.encode_text(tokens), source.encode_text(tokens))


def test_dinov3_files_that_do_not_fit_are_refused_naming_the_keys(v3_file, tmp_path):
    _, _, state = v3_file
    missing = {k: v for k, v in state.items() if k != "logit_scale"}
    torch.save(missing, tmp_path / "missing-0a1b2c3d.pth")
    with pytest.raises(WeightsMismatchError, match="logit_scale"):
        _v3_small(weights=tmp_path / "missing-0a1b2c3d.pth")
    with_backbone = dict(state, **{"visual_model.backbone.cls_token": torch.zeros(1, 1, 384)})
    torch.save(with_backbone, tmp_path / "full-0a1b2c3d.pth")
    with pytest.raises(WeightsMismatchError, match="backbone_weights"):
        _v3_small(weights=tmp_path / "full-0a1b2c3d.pth")


def test_dinov3_check_hash_compares_the_file_with_its_name(v3_file):
    _, path, _ = v3_file
    with pytest.raises(RuntimeError, match="expected 0a1b2c3d.*re-download"):
        _v3_small(weights=path, check_hash=True)


def test_the_model_flags_name_dinov3_s_model_and_its_one_file(v3_file, capsys):
    import argparse

    _, path, _ = v3_file
    parser = argparse.ArgumentParser()
    dinotxt.add_dinotxt_args(parser)
    args = parser.parse_args(["--model", dinotxt.RELEASED_V3, "--weights", str(path), "--no-pretrained"])
    dinotxt.check_dinotxt_args(parser, args)  # accepted
    for argv, message in (
        (["--weights", str(path)], "--weights is for --model dinov3_vitl16_dinotxt_tet1280d20h24l"),
        (["--model", dinotxt.RELEASED_V3, "--vision-head-weights", str(path)], "are for --model dinov2_vitl14_reg4"),
        (["--model", dinotxt.RELEASED_V3, "--weights", "missing.pth"], "--weights 'missing.pth' does not exist"),
        (["--model", dinotxt.RELEASED_V3, "--weights", str(path)], "pass --backbone-weights (the dinov3_vitl16 file)"),
    ):
        with pytest.raises(SystemExit):
            dinotxt.check_dinotxt_args(parser, parser.parse_args(argv))
        assert message in capsys.readouterr().err
