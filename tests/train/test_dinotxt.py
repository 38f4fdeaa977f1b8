"""dino.txt training on a tiny random-weight model: parameter groups, the temperature clamp, a frozen backbone
outside the checkpoints, exact resume after a stop, the export and the zero-shot evaluation at the end."""

from __future__ import annotations

import math

import pytest
import torch

from dinov2.hub.dinotxt import FILE_KEY
from dinov2.models.weights import read_checkpoint
from dinov2.text import tokenizer as tok
from dinov2.train.dinotxt import MAX_LOGIT_SCALE, do_train, train_step
from dinov2.train.dinotxt_config import DinoTxtConfigError, load_dinotxt_config
from dinov2.train.dinotxt_parts import TrainableParts, build_dinotxt_model, params_groups
from tests.text.helpers import TINY_HUB_NAME, make_image_folder, tiny_hub_backbone

pytestmark = pytest.mark.skipif(tok.find_vocab() is None, reason="no CLIP BPE vocabulary (pip install open_clip_torch)")


def make_caption_data(root):
    """``root/train``: 3 colours x 3 images with ``.txt`` captions; ``root/val``: 3 x 2 labelled images."""
    make_image_folder(root / "train", classes=("red", "blue", "green"), per_class=3, size=32)
    for image in (root / "train").rglob("*.png"):
        image.with_suffix(".txt").write_text(f"a {image.parent.name} picture\n{image.parent.name}\n")
    make_image_folder(root / "val", classes=("red", "blue", "green"), per_class=2, size=32)
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_caption_data(tmp_path_factory.mktemp("dinotxt_train"))


def tiny_opts(data) -> list[str]:
    """Overrides of a tiny dino.txt run on :func:`make_caption_data` (4 iterations, batch 4, 28 px)."""
    return [
        f"backbone.source={TINY_HUB_NAME}",
        "backbone.random_init=true",
        "model.head_drop_path=0.2",
        "model.text.dim=32",
        "model.text.num_heads=4",
        "model.text.num_layers=1",
        "model.text.context_length=16",
        f"data.dataset=CaptionFolder:root={data / 'train'}",
        "data.img_size=28",
        "data.batch_size=4",
        "data.num_workers=0",
        "optim.iterations=4",
        "optim.warmup_iterations=1",
        "checkpoint_period=2",
        f"eval.dataset=ImageFolder:root={data / 'val'}",
        "eval.crop_size=28",
    ]


def _config(data, output_dir, *opts):
    return load_dinotxt_config(None, [*tiny_opts(data), *opts], str(output_dir))


def test_config_errors_name_the_key(data, tmp_path):
    with pytest.raises(DinoTxtConfigError, match="did you mean 'optim.lr'"):
        _config(data, tmp_path, "optim.lrr=1")
    with pytest.raises(DinoTxtConfigError, match="model.patch_tokens_pooler"):
        _config(data, tmp_path, "model.patch_tokens_pooler=median")


def test_groups_clamp_and_frozen_backbone(data, tmp_path):
    with tiny_hub_backbone():
        model, _ = build_dinotxt_model(_config(data, tmp_path), torch.device("cpu"))
    parts = TrainableParts(model)
    assert not any(
        k.startswith("visual_model") or "backbone.blocks.0.attn" in k and "text" not in k for k in parts.state_dict()
    )
    decay, no_decay = params_groups(parts, 1e-4)
    names = {id(p): n for n, p in parts.named_parameters()}
    assert "text_model.backbone.token_embedding.weight" in {names[id(p)] for p in decay["params"]}
    assert "text_model.backbone.positional_embedding" in {names[id(p)] for p in decay["params"]}
    assert {"logit_scale", "visual_head.ln_final.weight"} <= {names[id(p)] for p in no_decay["params"]}
    assert all(p.ndim >= 2 for p in decay["params"]) and no_decay["weight_decay"] == 0.0
    optimizer = torch.optim.AdamW([decay, no_decay], lr=1.0)
    backbone_before = {k: v.clone() for k, v in model.visual_model.backbone.state_dict().items()}
    with torch.no_grad():
        model.logit_scale.fill_(5.0)
    images, tokens = torch.randn(4, 3, 28, 28), tok.get_tokenizer().tokenize(["a", "b", "c", "d"], 16)
    model.train()
    train_step(model, parts, optimizer, images, tokens, lr=1.0)
    assert 0 <= model.logit_scale.item() <= MAX_LOGIT_SCALE == pytest.approx(math.log(100))
    for key, value in model.visual_model.backbone.state_dict().items():
        assert torch.equal(value, backbone_before[key]), key


def _trained_state(path) -> dict:
    return {k: v for k, v in read_checkpoint(path)["model"].items()}


@pytest.mark.slow
def test_stop_and_resume_is_exact_and_exports(data, tmp_path):
    with tiny_hub_backbone():
        straight = do_train(_config(data, tmp_path / "straight"))
        first = do_train(_config(data, tmp_path / "resumed"), stop_after=1)
        assert len(first["losses"]) == 2 and "export" not in first
        resumed = do_train(_config(data, tmp_path / "resumed"))
        checkpointed = do_train(_config(data, tmp_path / "checkpointed", "train.checkpointing=true", "eval.dataset=''"))
    assert straight["losses"][2:] == resumed["losses"]
    assert checkpointed["losses"] == straight["losses"]  # recomputed activations: the same numbers
    assert _trained_state(checkpointed["export"]).keys() == _trained_state(straight["export"]).keys()
    want, got = _trained_state(straight["export"]), _trained_state(resumed["export"])
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(want[key], got[key]), key
    assert read_checkpoint(straight["export"])[FILE_KEY]["text"]["dim"] == 32
    assert straight["zeroshot"]["chance"] == pytest.approx(100 / 3) and 0 <= straight["zeroshot"]["top-1"] <= 100
    assert (tmp_path / "straight" / "results_zeroshot.json").is_file()
