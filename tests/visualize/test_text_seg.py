"""Open-vocabulary segmentation on a random-weight tiny dino.txt model: the maps against an independent
computation, sliding windows, the ``text-seg`` pictures and the mIoU evaluation on a generated dense dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dinov2.eval.zeroshot.segmentation import eval_text_segmentation
from dinov2.text import tokenizer as tok
from dinov2.text.segmentation import segmentation_scores, text_similarity_maps
from dinov2.visualize.__main__ import main as visualize_main
from tests.text.helpers import make_image_folder, tiny_hub_backbone, write_tiny_files

pytestmark = pytest.mark.skipif(tok.find_vocab() is None, reason="no CLIP BPE vocabulary (pip install open_clip_torch)")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("text_seg")
    model, model_file, backbone_file = write_tiny_files(root)
    return model, model_file, backbone_file, root


def test_maps_equal_an_independent_cosine(tiny):
    model = tiny[0]
    images = torch.randn(1, 3, 28, 42)
    weights = F.normalize(torch.randn(32, 3), dim=0)
    with torch.no_grad():
        maps = text_similarity_maps(model, images, weights)
        _, patches = model.visual_model.get_class_and_patch_tokens(images)  # [1, 6, 32]
    cosine = (F.normalize(patches, dim=-1) @ weights).reshape(1, 2, 3, 3).permute(0, 3, 1, 2)
    torch.testing.assert_close(maps, F.interpolate(cosine, size=(28, 42), mode="bilinear"))
    # a class whose text weight is a patch's own direction wins at that patch
    weights = F.normalize(patches[0, [0, 5]].T, dim=0)
    labels = text_similarity_maps(model, images, weights)[0].argmax(0)
    assert labels[7, 7] == 0 and labels[21, 35] == 1


def test_one_window_as_large_as_the_image_is_the_softmax_of_the_whole(tiny):
    model = tiny[0]
    images = torch.randn(1, 3, 28, 28)
    weights = F.normalize(torch.randn(32, 4), dim=0)
    whole = segmentation_scores(model, images, weights)
    slid = segmentation_scores(model, images, weights, window=28, stride=14)
    torch.testing.assert_close(slid, whole.softmax(dim=1))
    overlapping = segmentation_scores(model, torch.randn(1, 3, 28, 56), weights, window=28, stride=14)
    torch.testing.assert_close(overlapping.sum(1), torch.ones(1, 28, 56))  # averaged probabilities


def test_text_seg_pictures_from_the_command_line(tiny, tmp_path):
    _, model_file, backbone_file, root = tiny
    make_image_folder(tmp_path / "images", classes=("red",), per_class=2, size=40)
    images = sorted(str(p) for p in (tmp_path / "images" / "red").glob("*.png"))
    argv = [
        "text-seg",
        *images,
        "--classes",
        "red,blue,green sky",
        "--model",
        str(model_file),
        "--backbone-weights",
        str(backbone_file),
        "--no-pretrained",
        "--resolution",
        "28",
        "--output-dir",
        str(tmp_path / "out"),
    ]
    with tiny_hub_backbone():
        assert visualize_main(argv) == 0
    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} >= {
        "0_text_seg.png",
        "1_text_seg.png",
        "0_green_sky.png",
        "text_seg_sheet.png",
        "text_seg_legend.txt",
    }
    assert Image.open(out / "0_text_seg.png").size == (28, 28)
    assert len(Image.open(out / "text_seg_sheet.png").getbbox()) == 4
    assert (out / "text_seg_legend.txt").read_text().count("\n") == 4


def _dense_folder(root):
    rng = np.random.default_rng(0)
    for i in range(2):
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "labels").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (30, 44, 3)).astype(np.uint8)).save(root / "images" / f"{i}.png")
        label = rng.integers(0, 3, (30, 44)).astype(np.uint8)
        label[:4] = 255  # ignored
        Image.fromarray(label).save(root / "labels" / f"{i}.png")
    return f"SegmentationFolder:root={root}"


def test_miou_of_the_text_segmentation_equals_a_numpy_reference(tiny, tmp_path):
    model = tiny[0]
    dataset = _dense_folder(tmp_path / "dense")
    names, templates = ["red", "blue", "green"], ["a photo of a {}."]
    results = eval_text_segmentation(
        model,
        tok.get_tokenizer(),
        dataset,
        class_names=names,
        templates=templates,
        short_side=28,
        device="cpu",
        output_dir=str(tmp_path / "out"),
    )
    from dinov2.data.dense_transforms import make_dense_eval_transform
    from dinov2.eval.zeroshot.segmentation import _dense_dataset
    from dinov2.text.zeroshot import zeroshot_weights

    weights = zeroshot_weights(model, tok.get_tokenizer(), names, templates, part="local")
    inter, union = np.zeros(3), np.zeros(3)
    for image, label in _dense_dataset(dataset, make_dense_eval_transform("segmentation")):
        small = F.interpolate(image[None], size=(28, 41), mode="bicubic", align_corners=False)
        scores = F.interpolate(segmentation_scores(model, small, weights), size=(30, 44), mode="bilinear")
        pred, label = scores[0].argmax(0).numpy(), label.numpy()
        valid = label != 255
        for c in range(3):
            inter[c] += ((pred == c) & (label == c) & valid).sum()
            union[c] += (((pred == c) | (label == c)) & valid).sum()
    present = union > 0
    assert results["mIoU"] == pytest.approx(100 * (inter[present] / union[present]).mean())
    assert (tmp_path / "out" / "results_eval_zeroshot_segmentation_detailed.json").is_file()
