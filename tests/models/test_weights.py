"""Reading backbone weights from every source (file, export, meta-architecture, checkpoint folder, URL), the fit
report and its config-key hints, strict loading, and the reader / layout tables as the extension seam."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dinov2.models import weights
from dinov2.models.convert import flat_to_chunked
from dinov2.models.vision_transformer import DinoVisionTransformer, vit_small, vit_tiny
from dinov2.models.weights import Layout, Reader, WeightsMismatchError


def _vit(seed: int = 0, **kwargs) -> DinoVisionTransformer:
    torch.manual_seed(seed)
    options = dict(img_size=28, patch_size=14, embed_dim=16, depth=4, num_heads=2, init_values=1.0, block_chunks=0)
    options.update(kwargs)
    return DinoVisionTransformer(**options)


def _assert_equal(state_dict, reference):
    assert list(state_dict) == list(reference)
    for key, value in reference.items():
        assert torch.equal(state_dict[key], value), key


@pytest.fixture
def backbone():
    return _vit()


class _MetaArchitecture(nn.Module):
    """The student / teacher layout of the trainer's model (different weights in each)."""

    def __init__(self):
        super().__init__()
        self.student = nn.ModuleDict({"backbone": _vit(1), "dino_head": nn.Linear(16, 8)})
        self.teacher = nn.ModuleDict({"backbone": _vit(2, block_chunks=2), "dino_head": nn.Linear(16, 8)})


def test_files_exports_and_meta_architecture_state_dicts_give_the_flat_backbone(backbone, tmp_path):
    expected = backbone.state_dict()
    torch.save(expected, tmp_path / "hub.pth")
    chunked = flat_to_chunked(expected, depth=4, block_chunks=2)
    export = {"teacher": {f"module.backbone.{k}": v for k, v in chunked.items()}}
    export["teacher"]["module.dino_head.mlp.0.weight"] = torch.zeros(2, 2)
    torch.save(export, tmp_path / "teacher_checkpoint.pth")
    for name in ("hub.pth", "teacher_checkpoint.pth"):
        _assert_equal(weights.read_backbone_weights(tmp_path / name), expected)
    _assert_equal(weights.read_backbone_weights(export), expected)  # an already read mapping

    meta = _MetaArchitecture()
    torch.save({"model": meta.state_dict()}, tmp_path / "model.pth")
    teacher = {k: v for k, v in meta.teacher.backbone.state_dict().items()}
    flat = weights.read_backbone_weights(str(tmp_path / "model.pth"))  # the teacher, not the student
    _assert_equal(flat_to_chunked(flat, depth=4, block_chunks=2), teacher)


def test_trainer_checkpoint_folder_gives_its_teacher_backbone(tmp_path):
    from dinov2.train.checkpointing import Checkpointer

    meta = _MetaArchitecture()
    optimizer = torch.optim.SGD(meta.student.parameters(), lr=0.1)
    folder = Checkpointer(tmp_path).save(3, {"model": meta, "optimizer": optimizer})
    flat = weights.read_backbone_weights(folder)
    _assert_equal(flat_to_chunked(flat, depth=4, block_chunks=2), meta.teacher.backbone.state_dict())
    target = _vit(5, block_chunks=2)
    weights.load_backbone_weights(target, str(folder))
    _assert_equal(target.state_dict(), meta.teacher.backbone.state_dict())


@pytest.fixture
def hub_dir(tmp_path, monkeypatch):
    """An empty torch.hub directory for the test (through TORCH_HOME: ``set_dir`` would outlive the test)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    assert torch.hub.get_dir() == str(tmp_path / "torch_home" / "hub"), "torch.hub.set_dir was called elsewhere"
    return tmp_path / "torch_home" / "hub"


def test_urls_are_downloaded_once_into_the_torch_hub_cache(backbone, tmp_path, hub_dir):
    torch.save(backbone.state_dict(), tmp_path / "remote.pth")
    url = (tmp_path / "remote.pth").as_uri()
    _assert_equal(weights.read_backbone_weights(url), backbone.state_dict())
    cached = hub_dir / "checkpoints" / "remote.pth"
    assert cached.is_file()
    (tmp_path / "remote.pth").unlink()  # the cached copy is used from now on
    _assert_equal(weights.read_backbone_weights(url), backbone.state_dict())
    # A command-line flag gets a command-line hint (issue 26), a keyword argument a Python one.
    with pytest.raises(RuntimeError, match=r"could not download .*: --pretrained-weights /path/to/gone.pth$"):
        weights.read_checkpoint((tmp_path / "gone.pth").as_uri(), argument="--pretrained-weights")
    with pytest.raises(RuntimeError, match=r"could not download .*: weights='/path/to/gone.pth'$"):
        weights.read_checkpoint((tmp_path / "gone.pth").as_uri(), argument="weights")


def test_bad_sources_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="student.pretrained_weights is required"):
        weights.read_checkpoint("", argument="student.pretrained_weights")
    with pytest.raises(FileNotFoundError, match=r"weights '.*nope.pth' does not exist"):
        weights.read_checkpoint(tmp_path / "nope.pth")
    with pytest.raises(ValueError, match="neither a weights file nor a checkpoint folder"):
        weights.read_checkpoint(tmp_path)
    torch.save(torch.ones(2), tmp_path / "tensor.pth")
    with pytest.raises(ValueError, match="holds a Tensor, not a state dict"):
        weights.read_checkpoint(tmp_path / "tensor.pth")
    torch.save({"teacher": {"note": "no tensors"}}, tmp_path / "empty.pth")
    with pytest.raises(ValueError, match="holds no tensors"):
        weights.read_backbone_weights(tmp_path / "empty.pth")
    torch.save({"a": nn.Linear(2, 2)}, tmp_path / "pickled.pth")  # a pickled module: refused, never executed
    with pytest.raises(weights.NotAWeightsFileError, match=r"Python objects .*\(torch.nn.modules.linear.Linear\)"):
        weights.read_checkpoint(tmp_path / "pickled.pth")  # named, and no advice to turn weights_only off


def test_fit_report_lists_differences_and_names_the_config_keys(backbone):
    with_registers = _vit(num_register_tokens=4).state_dict()
    report = weights.fit_report(backbone, with_registers)
    assert not report.ok and report.unexpected == ["register_tokens"] and not report.missing
    hint = next(h for h in report.hints if h.key == "student.num_register_tokens")
    assert hint.value == 4
    message = report.message("w.pth", setter="--opts {key}={value}")
    assert "1 unexpected key(s): ['register_tokens']" in message
    assert "pass --opts student.num_register_tokens=4" in message and "nothing was loaded" in message

    big_grid = _vit(img_size=56).state_dict()  # 4 x 4 position grid for a 2 x 2 model
    report = weights.fit_report(backbone, big_grid)
    assert report.mismatched == [("pos_embed", (1, 17, 16), (1, 5, 16))]
    assert [(h.key, h.value) for h in report.hints] == [("crops.global_crops_size", 56)]

    with torch.device("meta"):  # another architecture: the hint names the one the weights fit
        small = vit_small(patch_size=14, img_size=28, init_values=1.0, block_chunks=0)
    report = weights.fit_report(small, vit_tiny(patch_size=14, img_size=28, init_values=1.0).state_dict())
    assert ("student.arch", "vit_tiny") in [(h.key, h.value) for h in report.hints]
    assert "embed dim 192, the config builds 384" in report.message("w", setter="{key}={value}")


def test_chunked_models_get_chunked_names_and_a_failed_load_copies_nothing(backbone):
    chunked = _vit(7, block_chunks=2)
    report = weights.fit_report(chunked, backbone.state_dict())
    assert report.ok and list(report.state_dict) == list(chunked.state_dict())
    before = {k: v.clone() for k, v in chunked.state_dict().items()}
    with pytest.raises(WeightsMismatchError, match="pos_embed"):
        weights.load_backbone_weights(chunked, _vit(img_size=56).state_dict())
    _assert_equal(chunked.state_dict(), before)
    weights.load_backbone_weights(chunked, _vit(img_size=56).state_dict(), resize_position_table=True)
    resized = weights.resize_pos_embed(_vit(img_size=56).pos_embed.detach(), 5)
    assert torch.equal(chunked.pos_embed, resized) and resized.shape == (1, 5, 16)
    assert torch.equal(resized[:, 0], _vit(img_size=56).pos_embed[:, 0].detach())  # the cls position is kept


def test_a_new_format_plugs_into_the_reader_and_layout_tables(backbone, tmp_path, monkeypatch):
    """What the Hugging Face / safetensors readers will do: one table entry each, before the catch-all ones."""
    torch.save({"renamed." + k: v for k, v in backbone.state_dict().items()}, tmp_path / "weights.toy")
    toy_reader = Reader("toy file", lambda path: path.suffix == ".toy", weights.READERS[-1].read)
    toy_layout = Layout(
        "toy layout",
        lambda checkpoint: all(key.startswith("renamed.") for key in checkpoint),
        lambda checkpoint: {key.removeprefix("renamed."): value for key, value in checkpoint.items()},
    )
    monkeypatch.setattr(weights, "READERS", [toy_reader, *weights.READERS])
    monkeypatch.setattr(weights, "LAYOUTS", [toy_layout, *weights.LAYOUTS])
    target = _vit(3)
    weights.load_backbone_weights(target, tmp_path / "weights.toy")
    _assert_equal(target.state_dict(), backbone.state_dict())


def test_hugging_face_and_timm_weights_go_through_the_same_reader(tmp_path):
    """Every loader reads the peers' formats: a transformers folder, a safetensors file, a timm checkpoint."""
    from dinov2.models.convert import export_hf, to_timm_state_dict

    model = _vit(3, num_heads=2, img_size=518)
    expected = model.state_dict()
    export_hf(model, tmp_path / "hf")
    for source in (tmp_path / "hf", tmp_path / "hf" / "model.safetensors"):
        _assert_equal({k: weights.read_backbone_weights(source)[k] for k in expected}, expected)
    torch.save(to_timm_state_dict(expected), tmp_path / "timm.pth")
    timm = weights.read_backbone_weights(tmp_path / "timm.pth")
    for key, value in expected.items():
        if key != "mask_token":  # timm has none: it comes back as zeros, the released initialisation
            assert torch.equal(timm[key], value), key
    report = weights.load_backbone_weights(_vit(4, img_size=518), tmp_path / "hf")
    assert report.ok
