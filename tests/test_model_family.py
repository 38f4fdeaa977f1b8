"""A new backbone family is one registered module plus its hub names: a toy family defined here, in a few lines,
runs through the trainer's builder, the backbone door, k-NN evaluation, the pictures and the export, and the
registries are as they were afterwards (also when the body raises)."""

from __future__ import annotations

import contextlib
import math
from functools import partial

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from dinov2.eval.knn import eval_knn_with_model
from dinov2.export.__main__ import main as export_main
from dinov2.features import load_backbone
from dinov2.hub import catalog
from dinov2.hub.backbones import make_backbone
from dinov2.models import ARCHS, build_model_from_cfg, registered_arch
from dinov2.models.families import ModelFamily, arch_names, family_names, get_family, registered_family
from dinov2.models.vision_transformer import _vit
from dinov2.utils.config import load_cfg
from dinov2.utils.registry import Registry
from dinov2.visualize.__main__ import main as visualize_main
from tests.models.conftest import _single_thread  # noqa: F401  (autouse fixture: one thread)


# ---------------------------------------------------------------- the toy family: registry entry + hub name
def toy_tiny(patch_size: int = 8, num_register_tokens: int = 0, **kwargs):
    return _vit(24, 2, 2, patch_size, num_register_tokens, **kwargs)  # 24 dims, 2 blocks, 2 heads


TOY_ARCHS = Registry("arch", {"toy_tiny": toy_tiny})


def _toy_build(student, arch, img_size, only_teacher):
    teacher = TOY_ARCHS[arch](img_size=img_size, patch_size=student.patch_size)
    return (None if only_teacher else TOY_ARCHS[arch](img_size=img_size, patch_size=student.patch_size)), teacher


TOY = ModelFamily(
    name="toy",
    archs=TOY_ARCHS,
    build=_toy_build,
    matches=lambda state_dict: False,  # never guessed from weights alone: reached by hub name or config
    kwargs_from_weights=lambda sd: ("toy_tiny", {"img_size": math.isqrt(sd["pos_embed"].shape[1] - 1) * 8}),
    num_extra_tokens=lambda model: 1,
    mean=(0.5, 0.5, 0.5),
    std=(0.25, 0.25, 0.25),
)
TOY_HUB = catalog.HubBackbone("toy_tiny8", "toy", "toy_tiny", dict(img_size=32, patch_size=8, block_chunks=0))


@contextlib.contextmanager
def toy_family():
    with registered_family(TOY), catalog.registered_backbone(TOY_HUB):
        yield


# ------------------------------------------------------------------------------------------------- the tests
def _images(folder, n: int, size: int = 40) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
        paths.append(str(folder / f"img{i}.png"))
    return paths


def test_a_toy_family_runs_through_every_tool(tmp_path):
    from dinov2.data.datasets.synthetic import make_synthetic_dataset

    root = tmp_path / "synthetic"
    make_synthetic_dataset(root, 3, 6, size=(40, 40), seed=0, val_images_per_class=2)
    train = f"Synthetic:root={root}:num_classes=3:images_per_class=6:val_images_per_class=2:size=40x40:split=TRAIN"
    with toy_family():
        opts = ["student.arch=toy_tiny", "student.patch_size=8", "crops.global_crops_size=32"]
        cfg = load_cfg(opts=opts)  # the toy arch passes the config checks: they read every family
        teacher, embed_dim = build_model_from_cfg(cfg, only_teacher=True)  # what the trainer calls
        assert embed_dim == 24 and teacher.pos_embed.shape == (1, 17, 24)

        torch.manual_seed(0)
        torch.save(make_backbone("toy_tiny8", pretrained=False).state_dict(), tmp_path / "toy.pth")
        loaded = load_backbone("toy_tiny8", weights=tmp_path / "toy.pth", device="cpu")
        assert (loaded.family, loaded.arch, loaded.embed_dim, loaded.patch_size) == ("toy", "toy_tiny", 24, 8)
        assert (loaded.num_extra_tokens, loaded.mean) == (1, (0.5, 0.5, 0.5))

        options = dict(nb_knn=[1], num_workers=0, crop_size=32, progress=False, accuracy_averaging="per_class_accuracy")
        results = eval_knn_with_model(loaded.model, None, train, train, **options)
        assert results["('full', 1) Top 1"] == [100.0] * 3  # every train image is its own nearest neighbour

        images = _images(tmp_path, 2)
        common = ["--model", "toy_tiny8", "--weights", str(tmp_path / "toy.pth"), "--resolution", "32"]
        assert visualize_main(["pca", *images, *common, "--output-dir", str(tmp_path / "pca")]) == 0
        assert visualize_main(["attention", *images, *common, "--output-dir", str(tmp_path / "att")]) == 0
        assert len(list((tmp_path / "att" / "img1").glob("cls_head*.png"))) == 2  # the toy has 2 heads

        output = tmp_path / "toy.safetensors"
        assert export_main(["safetensors", *common[:4], "--output", str(output)]) == 0
        saved, expected = load_file(output), torch.load(tmp_path / "toy.pth", weights_only=True)
        assert saved.keys() == expected.keys() and all(torch.equal(saved[k], expected[k]) for k in saved)
    assert "toy_tiny" not in arch_names() and "toy_tiny8" not in catalog.BACKBONES
    with pytest.raises(KeyError, match="unknown model family 'toy'"):
        get_family("toy")


def test_registries_are_restored_when_the_body_raises():
    before_archs, before_names = dict(ARCHS), dict(catalog.BACKBONES)
    with pytest.raises(RuntimeError, match="boom"), registered_arch("vit_boom", partial(_vit, 8, 1, 1)):
        assert "vit_boom" in ARCHS
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"), toy_family():
        assert "toy_tiny" in arch_names() and "toy_tiny8" in catalog.BACKBONES
        raise RuntimeError("boom")
    assert dict(ARCHS) == before_archs and dict(catalog.BACKBONES) == before_names
    assert "toy_tiny" not in arch_names()


def test_registries_refuse_silent_replacement():
    with registered_arch("vit_once", partial(_vit, 8, 1, 1)):
        with pytest.raises(ValueError, match="already registered"):
            ARCHS.register("vit_once", partial(_vit, 16, 1, 1))
    clash = ModelFamily("clash", Registry("arch", {"vit_small": toy_tiny}), *TOY_PARTS)
    with pytest.raises(ValueError, match="already belong to family 'dinov2_vit'"), registered_family(clash):
        pass
    with (
        pytest.raises(ValueError, match="already registered"),
        catalog.registered_backbone(catalog.HubBackbone("dinov2_vits14", "toy", "toy_tiny", {})),
    ):
        pass
    assert "vit_once" not in ARCHS and "clash" not in family_names()
    assert catalog.BACKBONES["dinov2_vits14"].family == "dinov2_vit"


TOY_PARTS = (TOY.build, TOY.matches, TOY.kwargs_from_weights, TOY.num_extra_tokens)
