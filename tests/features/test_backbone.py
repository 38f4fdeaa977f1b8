"""The backbone door: every source kind builds the model the old builders built (bit-identical outputs), with its
preprocessing facts; run folders pick their newest weights; errors name the fix."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from dinov2.features import LoadedBackbone, load_backbone
from dinov2.features.backbone import run_weights
from dinov2.hub.backbones import dinov2_vits14_reg
from dinov2.models import build_model_from_cfg
from dinov2.models.convert import export_hf
from dinov2.models.families import IMAGENET_MEAN, IMAGENET_STD
from dinov2.models.vision_transformer import vit_small
from tests.conftest import REPO_ROOT
from tests.models.conftest import _single_thread  # noqa: F401  (autouse fixture: one thread)
from tests.train.tiny import GLOBAL_SIZE, tiny_cfg

CPU = torch.device("cpu")


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module, size: int, seed: int = 0) -> None:
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        out_a, out_b = a.forward_features(x), b.forward_features(x)
    for key in ("x_norm_clstoken", "x_norm_patchtokens", "x_prenorm"):
        assert torch.equal(out_a[key], out_b[key]), key


def _export(model: torch.nn.Module, path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"teacher": {f"backbone.{k}": v for k, v in model.state_dict().items()}}, path)


def _reference_teacher(cfg, seed: int) -> torch.nn.Module:
    """The old builder's model: the config's teacher with its weights loaded strictly, frozen, in eval mode."""
    torch.manual_seed(seed)
    teacher, _ = build_model_from_cfg(cfg, only_teacher=True)
    return teacher.eval()


def test_config_and_weights(tmp_path):
    cfg = tiny_cfg(tmp_path)
    OmegaConf.save(cfg, tmp_path / "config.yaml")
    reference = _reference_teacher(cfg, seed=3)
    _export(reference, tmp_path / "teacher_checkpoint.pth")
    for config in (cfg, tmp_path / "config.yaml"):
        loaded = load_backbone(config=config, weights=tmp_path / "teacher_checkpoint.pth", device=CPU)
        assert isinstance(loaded, LoadedBackbone)
        _same_outputs(loaded.model, reference, GLOBAL_SIZE)
        assert not loaded.model.training and not any(p.requires_grad for p in loaded.model.parameters())
        assert (loaded.family, loaded.arch, loaded.patch_size, loaded.embed_dim) == ("dinov2_vit", "vit_test", 4, 32)
        assert loaded.num_extra_tokens == 1 and (loaded.mean, loaded.std) == (IMAGENET_MEAN, IMAGENET_STD)
        assert loaded.autocast_dtype == torch.float32 and loaded.config is not None


def test_run_folder_takes_its_newest_export(tmp_path):
    cfg = tiny_cfg(tmp_path)
    OmegaConf.save(cfg, tmp_path / "config.yaml")
    old, new = _reference_teacher(cfg, seed=1), _reference_teacher(cfg, seed=2)
    _export(old, tmp_path / "eval" / "training_9" / "teacher_checkpoint.pth")
    _export(new, tmp_path / "eval" / "manual_12" / "teacher_checkpoint.pth")
    (tmp_path / "eval" / "training_99").mkdir()  # an export folder without its file (interrupted): ignored
    assert run_weights(tmp_path) == tmp_path / "eval" / "manual_12" / "teacher_checkpoint.pth"
    loaded = load_backbone(tmp_path, device=CPU)
    _same_outputs(loaded.model, new, GLOBAL_SIZE)
    with pytest.raises(FileNotFoundError, match="no teacher export"):
        run_weights(tmp_path / "eval")


def test_hub_name_with_a_local_weights_file(tmp_path):
    torch.manual_seed(0)
    trained = vit_small(patch_size=14, img_size=56, init_values=1.0, block_chunks=0).eval()  # a 4 x 4 grid
    _export(trained, tmp_path / "teacher.pth")
    loaded = load_backbone("dinov2_vits14", weights=tmp_path / "teacher.pth", device=CPU)
    assert loaded.model.pos_embed.shape == (1, 17, 384)  # kept as trained, not resized to 518 px
    _same_outputs(loaded.model, trained, 56)
    assert (loaded.arch, loaded.patch_size, loaded.num_extra_tokens, loaded.source) == (
        "vit_small",
        14,
        1,
        "dinov2_vits14",
    )


def test_hugging_face_folder_alone(tmp_path):
    torch.manual_seed(0)
    registers = dict(num_register_tokens=4, interpolate_antialias=True, interpolate_offset=0.0)
    original = vit_small(patch_size=14, img_size=56, init_values=1.0, block_chunks=0, **registers).eval()
    export_hf(original, tmp_path / "hf")
    loaded = load_backbone(tmp_path / "hf", device=CPU)
    _same_outputs(loaded.model, original, 56)
    _same_outputs(loaded.model, original, 70)  # the same position-table resizing as the original
    assert (loaded.arch, loaded.num_extra_tokens, loaded.embed_dim) == ("vit_small", 5, 384)
    same_by_name = load_backbone("dinov2_vits14_reg", weights=tmp_path / "hf", device=CPU)
    _same_outputs(same_by_name.model, original, 56)


def test_errors_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match="unknown backbone 'vit_huge'.*dinov2_vitb14"):
        load_backbone("vit_huge", weights=tmp_path / "w.pth")
    with pytest.raises(ValueError, match="not both"):
        load_backbone("dinov2_vits14", config=tmp_path / "x.yaml")
    with pytest.raises(ValueError, match="exclude each other"):
        load_backbone("dinov2_vits14", weights=tmp_path / "w.pth", random_init=True)
    with pytest.raises(ValueError, match="needs a source"):
        load_backbone()
    cfg = tiny_cfg(tmp_path)
    with pytest.raises(ValueError, match="--pretrained-weights is required"):
        load_backbone(config=cfg, device=CPU, argument="--pretrained-weights")


def test_weights_of_another_family_given_with_a_hub_name_say_what_they_are(tmp_path):
    """A DINOv2 file with a DINOv3 name (and the other way round) through the door and the hub entry points: what
    the file holds and what to pass, not a KeyError from reading the wrong keys; unknown weights: every difference."""
    from dinov2.hub import dinov3_backbones
    from dinov2.hub.backbones import dinov2_vits14
    from dinov2.models.weights import WeightsMismatchError

    torch.manual_seed(0)
    torch.save(vit_small(patch_size=14, img_size=56, block_chunks=0).state_dict(), tmp_path / "v2.pth")
    torch.save(dinov3_backbones.dinov3_vits16(pretrained=False).state_dict(), tmp_path / "v3.pth")
    torch.save({"cls_token": torch.zeros(1, 1, 384)}, tmp_path / "odd.pth")
    v2_in_v3 = r"'.*v2.pth' holds dinov2_vit weights, not the dinov3_vit weights that dinov3_vits16 is built for"
    for load in (
        lambda w: load_backbone("dinov3_vits16", weights=w),
        lambda w: dinov3_backbones.dinov3_vits16(weights=w),
    ):
        with pytest.raises(WeightsMismatchError, match=v2_in_v3 + r".*dinov2_vit hub name \(dinov2_vitb14"):
            load(tmp_path / "v2.pth")
    for load in (lambda w: load_backbone("dinov2_vits14", weights=w), lambda w: dinov2_vits14(weights=w)):
        with pytest.raises(WeightsMismatchError, match="holds dinov3_vit weights, not the dinov2_vit weights"):
            load(tmp_path / "v3.pth")
    with pytest.raises(WeightsMismatchError, match="holds dinov3_vit weights, not the dinov3_convnext weights"):
        load_backbone("dinov3_convnext_tiny", weights=tmp_path / "v3.pth")
    with pytest.raises(WeightsMismatchError, match=r"(?s)do not fit dinov3_vits16.*missing key\(s\)"):
        load_backbone("dinov3_vits16", weights=tmp_path / "odd.pth")


@pytest.mark.parametrize(
    "module, forbidden",
    [
        ("dinov2.train.knn_monitor", ("dinov2.eval",)),
        ("dinov2.curation._features", ("dinov2.eval",)),
        ("dinov2.visualize.__main__", ("dinov2.eval",)),
        ("dinov2.export.__main__", ("dinov2.eval", "dinov2.visualize")),
    ],
)
def test_tools_reach_the_backbone_through_the_door_only(module, forbidden):
    """Importing the tool (in a fresh interpreter) loads none of the other tools' packages."""
    code = f"import sys, {module}; print([m for m in sys.modules if m.startswith({forbidden!r})])"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_random_init_is_the_seeded_released_initialisation_and_leaves_the_caller_stream_alone(tmp_path):
    cfg = tiny_cfg(tmp_path)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    by_config = load_backbone(config=cfg, random_init=True, seed=5, device=CPU)
    by_name = load_backbone("dinov2_vits14_reg", random_init=True, seed=5, device=CPU)
    assert torch.equal(torch.random.get_rng_state(), before)
    _same_outputs(by_config.model, _reference_teacher(cfg, seed=5), GLOBAL_SIZE)
    torch.manual_seed(5)
    _same_outputs(by_name.model, dinov2_vits14_reg(pretrained=False).eval(), 28)
