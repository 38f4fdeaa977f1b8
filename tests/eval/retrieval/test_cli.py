"""``python -m dinov2.eval.retrieval`` end to end on a generated revisited-style folder with a random tiny backbone,
against descriptors and a ranking computed here; the ground-truth readers and the preprocessing."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from PIL import Image

from dinov2.eval.retrieval import (
    RetrievalDescriptor,
    RetrievalTransform,
    compute_map,
    convert_ground_truth,
    protocol_ground_truth,
    read_ground_truth,
    retrieval_size,
)
from dinov2.eval.retrieval.cli import cli_main
from dinov2.eval.retrieval.convert import main as convert_main
from dinov2.features import load_backbone
from tests.conftest import preserved_logging
from tests.train.tiny import tiny_cfg

N_DB, N_Q = 10, 3


def _image(rng, size):
    return Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def revisited(tmp_path_factory):
    """roxford5k/jpg with 10 database images (sizes differ) and 3 queries, its gnd pickle, and a tiny config."""
    root = tmp_path_factory.mktemp("revisitop")
    folder = root / "roxford5k" / "jpg"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    imlist, qimlist = [f"db_{i}" for i in range(N_DB)], [f"q_{i}" for i in range(N_Q)]
    for i, name in enumerate(imlist):
        _image(rng, (20 + 2 * i, 18)).save(folder / f"{name}.jpg")
    for name in qimlist:
        _image(rng, (24, 20)).save(folder / f"{name}.jpg")
    none = np.array([], dtype=np.int64)
    sets = [
        ([0, 1], [2], [3], [2.4, 1.0, 20.0, 18.6]),
        ([4], none, [5, 6], [0, 0, 24, 20]),
        (none, [7, 8], [9], [3, 3, 15, 17]),
    ]
    keys = ("easy", "hard", "junk", "bbx")
    gnd = [{key: np.asarray(value) for key, value in zip(keys, entry)} for entry in sets]
    (root / "roxford5k" / "gnd_roxford5k.pkl").write_bytes(
        pickle.dumps({"imlist": imlist, "qimlist": qimlist, "gnd": gnd})
    )
    for i in range(3):  # distractors: a flat folder of other images
        (root / "distractors").mkdir(exist_ok=True)
        _image(rng, (22, 16)).save(root / "distractors" / f"d_{i}.jpg")
    OmegaConf.save(tiny_cfg(root), root / "config.yaml")
    return root


def _expected_map(root, crop: bool, multiscale: bool, distractors: bool) -> dict:
    """Descriptors of the same backbone computed here (transform, crop, scales), ranked with numpy."""
    backbone = load_backbone(config=root / "config.yaml", random_init=True, device="cpu", validate=False)
    transform = RetrievalTransform(16, backbone.patch_size, backbone.mean, backbone.std)
    truth = read_ground_truth(root / "roxford5k" / "gnd_roxford5k.pkl")
    folder = root / "roxford5k" / "jpg"

    def describe(name, box=None):
        image = Image.open(folder / f"{name}.jpg" if isinstance(name, str) else name).convert("RGB")
        x = transform(image.crop(tuple(box)) if box is not None else image)[None]
        total = 0
        for s in (1, 2**-0.5, 0.5) if multiscale else (1,):
            size = [max(4, round(d * s / 4) * 4) for d in x.shape[-2:]]
            scaled = x if list(x.shape[-2:]) == size else F.interpolate(x, size, mode="bilinear", align_corners=False)
            total = total + backbone.model.forward_features(scaled)["x_norm_clstoken"]
        return F.normalize(total, dim=-1)[0]

    with torch.no_grad():
        extra = sorted((root / "distractors").iterdir()) if distractors else []
        database = torch.stack([describe(n) for n in [*truth.imlist, *extra]]).numpy()
        queries = torch.stack(
            [describe(n, e["bbx"] if crop else None) for n, e in zip(truth.qimlist, truth.gnd)]
        ).numpy()
    sims = queries @ database.T
    ranks = np.stack([np.lexsort((np.arange(len(database)), -row)) for row in sims], axis=1)
    return {p: 100 * compute_map(ranks, protocol_ground_truth(truth.gnd, p))[0] for p in ("easy", "medium", "hard")}


CASES = [[], ["--crop-queries", "--multiscale"], ["--distractors", "ImageFolder:root={root}/distractors"]]


@pytest.mark.usefixtures("single_process_eval")  # one thread; the process group state forgotten after
@pytest.mark.parametrize("extra", CASES, ids=["default", "crop-multiscale", "distractors"])
def test_cli_end_to_end(revisited, tmp_path, extra):
    extra = [value.format(root=revisited) for value in extra]
    out = tmp_path / "out"
    argv = ["--config-file", str(revisited / "config.yaml"), "--random-init", "--data-root", str(revisited)]
    argv += [
        "--datasets",
        "roxford5k",
        "--imsize",
        "16",
        "--num-workers",
        "0",
        "--no-progress",
        "--output-dir",
        str(out),
    ]
    with preserved_logging():
        assert cli_main(argv + extra) == 0
    detailed = json.loads((out / "results_eval_retrieval_detailed.json").read_text())
    lines = [json.loads(line) for line in (out / "results_eval_retrieval.json").read_text().splitlines()]
    flat = {k: v for line in lines for k, v in line.items()}
    crop, distractors = "--crop-queries" in extra, "--distractors" in extra
    expected = _expected_map(revisited, crop=crop, multiscale=crop, distractors=distractors)
    for protocol, value in expected.items():
        assert flat[f"roxford5k {protocol} mAP"] == pytest.approx(value, abs=1e-4)
    assert detailed["datasets"]["roxford5k"]["num_database"] == N_DB + 3 * distractors
    assert detailed["datasets"]["roxford5k"]["easy"]["AP"][2] is None  # no easy positive: NaN, written as null


def test_ground_truth_pickle_and_json_agree(revisited, tmp_path):
    source = revisited / "roxford5k" / "gnd_roxford5k.pkl"
    assert convert_main([str(source), str(tmp_path / "gnd.json")]) == 0
    assert read_ground_truth(tmp_path / "gnd.json") == read_ground_truth(source)
    assert read_ground_truth(source).gnd[0] == {"easy": [0, 1], "hard": [2], "junk": [3], "bbx": [2.4, 1.0, 20.0, 18.6]}


def test_unsafe_ground_truth_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    (tmp_path / "gnd.pkl").write_bytes(pickle.dumps({"imlist": [], "qimlist": [], "gnd": [Evil()]}))
    with pytest.raises(pickle.UnpicklingError, match="builtins.print"):
        convert_ground_truth(tmp_path / "gnd.pkl", tmp_path / "gnd.json")
    assert not (tmp_path / "gnd.json").exists()


def test_retrieval_size_shrinks_keeps_aspect_and_fits_the_patch_grid():
    assert retrieval_size(1024, 768, 224, 14) == (224, 168)  # 224 x 168: both multiples of 14
    assert retrieval_size(100, 60, 224, 14) == (98, 56)  # never enlarged, only rounded to the grid
    assert retrieval_size(5, 5, 224, 14) == (14, 14)  # at least one patch


def test_gem_pooling_and_scales():
    class Tokens(torch.nn.Module):
        def forward_features(self, x):
            patches = x.flatten(2).transpose(1, 2)  # [B, HW, 3]: pixels as tokens
            return {"x_norm_clstoken": patches.mean(1), "x_norm_patchtokens": patches}

    x = torch.rand(1, 3, 8, 12)
    got = RetrievalDescriptor(Tokens(), 4, pooling="gem")(x)
    expected = F.normalize(x.flatten(2).clamp(min=1e-6).pow(3).mean(-1).pow(1 / 3), dim=-1)
    torch.testing.assert_close(got, expected)
    multi = RetrievalDescriptor(Tokens(), 4, scales=(1.0, 0.5))(x)
    half = F.interpolate(x, (4, 8), mode="bilinear", align_corners=False).flatten(2).mean(-1)
    torch.testing.assert_close(multi, F.normalize((x.flatten(2).mean(-1) + half) / 2, dim=-1))


def test_launcher_takes_the_retrieval_flags_and_fails_early(tmp_path, capsys):
    from dinov2.run.eval import launcher

    with pytest.raises(SystemExit):
        launcher.launch("retrieval", ["--help"])
    help_text = capsys.readouterr().out
    assert "--data-root" in help_text and "--nodes" in help_text and "--model" in help_text
    with pytest.raises(SystemExit):
        launcher.launch("retrieval", ["--model", "dinov2_vits14", "--data-root", str(tmp_path)])
    assert "roxford5k" in capsys.readouterr().err


@pytest.mark.parametrize(
    "name, content, says",
    [
        ("gnd_roxford5k.pkl", pickle.dumps({"imlist": []})[:6], "not a readable pickle"),  # a copy that stopped early
        ("gnd_roxford5k.pkl", b"<html>Not found</html>", "not a readable pickle"),  # a download gone wrong
        ("gnd_roxford5k.pkl", pickle.dumps({"imlist": [], "gnd": []}), "must hold 'imlist', 'qimlist' and 'gnd'"),
        ("gnd_roxford5k.pkl", pickle.dumps({"gnd": [print]}), "builtins.print"),
        ("gnd_roxford5k.json", b'{"imlist": [', "not valid JSON"),
    ],
)
def test_an_unreadable_ground_truth_is_a_usage_error_before_any_model(tmp_path, capsys, name, content, says):
    (tmp_path / "roxford5k" / "jpg").mkdir(parents=True)
    (tmp_path / "roxford5k" / name).write_bytes(content)
    argv = ["--config-file", "/nonexistent/config.yaml", "--weights", "/nonexistent.pth"]  # never reached
    with pytest.raises(SystemExit) as exit_info:
        cli_main([*argv, "--data-root", str(tmp_path), "--datasets", "roxford5k"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert says in error and name in error and "Traceback" not in error
