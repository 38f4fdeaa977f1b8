"""Zero-shot classification: class weights and predictions against a NumPy reference on a random-weight tiny
dino.txt model, the command line on a dino.txt file (no download), the result files and usage errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dinov2.eval.zeroshot import cli
from dinov2.hub import dinotxt
from dinov2.text import tokenizer as tok
from dinov2.text.zeroshot import read_templates, zeroshot_weights
from tests.text.helpers import TINY_HUB_NAME, make_image_folder, tiny_dinotxt, tiny_hub_backbone

pytestmark = pytest.mark.skipif(tok.find_vocab() is None, reason="no CLIP BPE vocabulary (pip install open_clip_torch)")
TEMPLATES = ["a photo of a {}.", "a {} thing."]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("zeroshot")
    make_image_folder(root / "val")
    model = tiny_dinotxt(seed=3)
    with tiny_hub_backbone():
        dinotxt.save_dinotxt(model, root / "tiny_dinotxt.pth", TINY_HUB_NAME)
    torch.save(model.visual_model.backbone.state_dict(), root / "backbone.pth")
    return root, model, tok.get_tokenizer()


def _normalise(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_templates_file_has_the_80_imagenet_templates():
    templates = read_templates()
    assert (
        len(templates) == 80 and templates[0] == "a bad photo of a {}." and all(t.count("{}") == 1 for t in templates)
    )


def test_weights_and_predictions_equal_a_numpy_reference(setup):
    root, model, tokenizer = setup
    names = ["blue", "red"]  # the folder names, sorted: the labels of ImageFolder
    weights = zeroshot_weights(model, tokenizer, names, TEMPLATES).numpy()
    with torch.no_grad():
        text = [model.encode_text(tokenizer.tokenize([t.format(n) for t in TEMPLATES])).numpy() for n in names]
    want = np.stack([_normalise(_normalise(t).mean(0)) for t in text], axis=1)
    np.testing.assert_allclose(weights, want, rtol=1e-5, atol=1e-6)

    results = cli.eval_zeroshot_with_model(
        model,
        tokenizer,
        f"ImageFolder:root={root / 'val'}",
        templates=TEMPLATES,
        num_workers=0,
        crop_size=28,
        device="cpu",
    )
    transform = cli.make_eval_transform(28, None, cli.RESIZE_RATIO)
    dataset = cli.make_eval_dataset(f"ImageFolder:root={root / 'val'}", transform, "val")
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    labels = np.array([dataset[i][1] for i in range(len(dataset))])
    with torch.no_grad():
        features = _normalise(model.encode_image(images).numpy())
    predictions = (100 * features @ want).argmax(1)
    assert results["top-1"] == pytest.approx(100 * (predictions == labels).mean())
    assert results["top-5"] == 100.0  # two classes: the true one is always among the top 5


def test_command_line_on_a_dinotxt_file(setup, tmp_path, monkeypatch):
    root, model, _ = setup
    (tmp_path / "classes.txt").write_text("blue\nred\n")
    (tmp_path / "templates.txt").write_text("\n".join(TEMPLATES) + "\n")
    argv = [
        "--model",
        str(root / "tiny_dinotxt.pth"),
        "--backbone-weights",
        str(root / "backbone.pth"),
        "--no-pretrained",
        "--val-dataset",
        f"ImageFolder:root={root / 'val'}",
        "--class-names",
        str(tmp_path / "classes.txt"),
        "--templates",
        str(tmp_path / "templates.txt"),
        "--crop-size",
        "28",
        "--num-workers",
        "0",
        "--output-dir",
        str(tmp_path / "out"),
    ]
    with tiny_hub_backbone():
        assert cli.cli_main(argv) == 0
    detailed = json.loads((tmp_path / "out" / "results_eval_zeroshot_detailed.json").read_text())
    assert detailed["num_classes"] == 2 and detailed["num_templates"] == 2 and detailed["num_val"] == 6
    want = cli.eval_zeroshot_with_model(
        model,
        tok.get_tokenizer(),
        f"ImageFolder:root={root / 'val'}",
        class_names=["blue", "red"],
        templates=TEMPLATES,
        num_workers=0,
        crop_size=28,
        device="cpu",
    )
    assert detailed["results"] == pytest.approx(want)
    lines = (tmp_path / "out" / "results_eval_zeroshot.json").read_text().splitlines()
    assert [list(json.loads(line)) for line in lines] == [["top-1"], ["top-5"]]


def test_usage_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.cli_main(["--model", str(tmp_path / "missing.pth"), "--val-dataset", "ImageFolder:root=x"])
    assert exit_info.value.code == 2 and "missing.pth" in capsys.readouterr().err
    (tmp_path / "t.txt").write_text("no placeholder\n")
    with pytest.raises(SystemExit):
        cli.cli_main(["--no-pretrained", "--val-dataset", "ImageFolder:root=x", "--templates", str(tmp_path / "t.txt")])
    assert "exactly one '{}'" in capsys.readouterr().err
