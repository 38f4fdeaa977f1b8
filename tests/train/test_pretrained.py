"""Starting training from weights: ``student.pretrained_weights`` (any backbone source, position table resized,
fit report with config keys) and ``MODEL.WEIGHTS`` (a whole training state)."""

from __future__ import annotations

import pytest
import torch

from dinov2.models.vision_transformer import ARCHS
from dinov2.models.weights import WeightsMismatchError, resize_pos_embed
from dinov2.train.checkpointing import Checkpointer
from dinov2.train.pretrained import load_model_weights, load_student_pretrained_weights
from dinov2.train.ssl_meta_arch import SSLMetaArch
from tests.train.tiny import GLOBAL_SIZE, PATCH, tiny_cfg


def _model(tmp_path, seed: int, *opts: str) -> SSLMetaArch:
    torch.manual_seed(seed)
    return SSLMetaArch(tiny_cfg(tmp_path, *opts))


def _backbone(img_size: int, seed: int, num_register_tokens: int = 0):
    torch.manual_seed(seed)
    options = dict(patch_size=PATCH, img_size=img_size, init_values=1.0, block_chunks=0)
    return ARCHS["vit_test"](num_register_tokens=num_register_tokens, **options)


def _assert_backbones_hold(model: SSLMetaArch, expected: dict) -> None:
    for role in ("student", "teacher"):
        state_dict = getattr(model, role).backbone.state_dict()
        assert state_dict.keys() == expected.keys()
        for key, value in expected.items():
            assert torch.equal(state_dict[key], value), (role, key)


def test_a_hub_style_file_at_another_resolution_initialises_both_backbones(tmp_path):
    source = _backbone(2 * GLOBAL_SIZE, seed=1)  # an 8 x 8 position grid; the run trains at 4 x 4
    torch.save(source.state_dict(), tmp_path / "backbone.pth")
    model = _model(tmp_path, 0)
    head_before = model.student.dino_head.state_dict()
    load_student_pretrained_weights(model, str(tmp_path / "backbone.pth"))
    expected = dict(source.state_dict())
    expected["pos_embed"] = resize_pos_embed(source.pos_embed.detach(), (GLOBAL_SIZE // PATCH) ** 2 + 1)
    _assert_backbones_hold(model, expected)
    for key, value in head_before.items():  # heads start fresh
        assert torch.equal(model.student.dino_head.state_dict()[key], value)


def test_a_trainer_checkpoint_folder_gives_its_teacher_backbone(tmp_path):
    earlier = _model(tmp_path / "earlier", 3)
    with torch.no_grad():
        for param in earlier.teacher.backbone.parameters():  # teacher and student differ, as after training
            param.add_(1.0)
    folder = Checkpointer(tmp_path / "earlier").save(7, {"model": earlier})
    model = _model(tmp_path, 0)
    load_student_pretrained_weights(model, str(folder))
    _assert_backbones_hold(model, dict(earlier.teacher.backbone.state_dict()))


def test_weights_that_do_not_fit_name_the_config_key_and_leave_the_model_untouched(tmp_path):
    torch.save(_backbone(GLOBAL_SIZE, seed=1, num_register_tokens=2).state_dict(), tmp_path / "reg.pth")
    model = _model(tmp_path, 0)
    before = {k: v.clone() for k, v in model.student.backbone.state_dict().items()}
    with pytest.raises(WeightsMismatchError) as error:
        load_student_pretrained_weights(model, str(tmp_path / "reg.pth"))
    assert isinstance(error.value, RuntimeError)  # what the trainer raised before
    message = str(error.value)
    assert "student backbone (vit_test, patch 4)" in message and "pass student.num_register_tokens=2" in message
    _assert_backbones_hold(model, before)
    with pytest.raises(FileNotFoundError, match="student.pretrained_weights '.*missing.pth' does not exist"):
        load_student_pretrained_weights(model, str(tmp_path / "missing.pth"))


def test_model_weights_from_a_file_or_a_checkpoint_folder(tmp_path):
    source = _model(tmp_path / "source", 5)
    torch.save({"model": source.state_dict()}, tmp_path / "state.pth")
    folder = Checkpointer(tmp_path / "source").save(3, {"model": source})
    for path in (tmp_path / "state.pth", folder):
        model = _model(tmp_path, 0)
        load_model_weights(model, str(path))
        for key, value in source.state_dict().items():
            assert torch.equal(model.state_dict()[key], value), (path, key)
    torch.save({"model": {"student.backbone.cls_token": torch.zeros(1)}}, tmp_path / "partial.pth")
    with pytest.raises(RuntimeError, match="MODEL.WEIGHTS=.*does not fit the model"):
        load_model_weights(_model(tmp_path, 0), str(tmp_path / "partial.pth"))
