"""Video from frame features: frame sampling, clip readers, mean / concat aggregation, and the probe learning
generated clips of moving shapes (random tiny backbone) through the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision
from omegaconf import OmegaConf
from PIL import Image

from dinov2.data.datasets.video import VideoClips, sample_frame_indices
from dinov2.eval.video import ClipEncoder, aggregate_frames
from dinov2.eval.video.cli import cli_main
from tests.conftest import preserved_logging
from tests.train.tiny import tiny_cfg

SIZE = 16
COLOURS = [(230, 40, 40), (40, 200, 60), (50, 80, 230)]


def _clip(folder, label: int, seed: int, frames: int) -> None:
    """A shape of the class's colour and kind moving across a noisy background, one JPEG per frame."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    start = rng.integers(0, 6, size=2)
    for t in range(frames):
        image = rng.integers(0, 60, size=(SIZE, SIZE, 3)).astype(np.uint8)
        y, x = (start + t * np.array([label % 2, 1])) % (SIZE - 5)
        if label == 1:  # a cross instead of a square
            image[y + 2, x : x + 5], image[y : y + 5, x + 2] = COLOURS[label], COLOURS[label]
        else:
            image[y : y + 5, x : x + 5] = COLOURS[label]
        Image.fromarray(image).save(folder / f"{t:05d}.jpg")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("video")
    for split, count in (("train", 7), ("val", 4)):
        for label in range(3):
            for i in range(count):
                _clip(
                    root / split / f"class{label}" / f"clip{i}", label, 1000 * label + 10 * i + (split == "val"), 5 + i
                )
    OmegaConf.save(tiny_cfg(root), root / "config.yaml")
    return root


@pytest.mark.parametrize("total, expected", [(1, [0] * 8), (7, [0, 1, 2, 3, 3, 4, 5, 6]), (8, list(range(8)))])
def test_frame_sampling_is_uniform_with_both_ends(total, expected):
    assert sample_frame_indices(total, 8) == expected
    indices = sample_frame_indices(300, 8)
    assert indices[0] == 0 and indices[-1] == 299 and len(set(np.diff(indices).tolist()) - {42, 43}) == 0


def test_clip_folders_give_sampled_frames(clips):
    dataset = VideoClips(clips / "train", num_frames=4)
    assert dataset.classes == ["class0", "class1", "class2"] and len(dataset) == 21
    frames, label = dataset[1]  # 6 frames on disk -> indices 0, 2, 3, 5
    assert frames.shape == (4, 3, SIZE, SIZE) and label == 0
    expected = torch.from_numpy(np.array(Image.open(clips / "train/class0/clip1/00003.jpg"))).permute(2, 0, 1)
    assert torch.equal((frames[2] * 255).round().byte(), expected)


def test_video_files_read_through_torchvision_video_io_when_it_exists(tmp_path):
    path = tmp_path / "class0" / "clip.mp4"
    path.parent.mkdir()
    if not hasattr(torchvision.io, "read_video"):
        path.write_bytes(b"")
        with pytest.raises(ImportError, match="frame folders"):
            VideoClips(tmp_path, num_frames=8)[0]
        return
    pytest.importorskip("av", reason="torchvision's video IO needs PyAV")
    video = torch.randint(0, 255, (12, SIZE, SIZE, 3), dtype=torch.uint8)
    torchvision.io.write_video(str(path), video, fps=4)
    frames, label = VideoClips(tmp_path, num_frames=8)[0]
    assert frames.shape == (8, 3, SIZE, SIZE) and label == 0


def test_mean_and_concat_aggregation():
    class PixelMean(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3))  # [N, 3]

    rising = torch.linspace(0, 1, 8).view(1, 8, 1, 1, 1).expand(1, 8, 3, 4, 4)
    falling = rising.flip(1)
    clips = torch.cat([rising, falling])  # the order of the frames is the only difference
    mean, concat = ClipEncoder(PixelMean(), "mean")(clips), ClipEncoder(PixelMean(), "concat")(clips)
    assert mean.shape == (2, 3) and concat.shape == (2, 24)
    assert torch.allclose(mean[0], mean[1]) and not torch.allclose(concat[0], concat[1])
    with pytest.raises(ValueError, match="unknown frame aggregation"):
        aggregate_frames(concat.view(2, 8, 3), "max")


@pytest.mark.usefixtures("single_process_eval")  # one thread; the process group state forgotten after
@pytest.mark.parametrize("aggregation", ["mean", "concat"])
def test_probe_learns_moving_shapes_above_chance(clips, tmp_path, aggregation):
    out = tmp_path / "out"
    argv = ["--config-file", str(clips / "config.yaml"), "--random-init", "--train-root", str(clips / "train")]
    argv += ["--val-root", str(clips / "val"), "--crop-size", str(SIZE), "--aggregation", aggregation]
    argv += ["--num-workers", "0", "--no-progress", "--c-values", "0.1", "10", "1000", "--output-dir", str(out)]
    with preserved_logging():
        assert cli_main(argv) == 0
    result = json.loads((out / "results_eval_video_detailed.json").read_text())
    assert result["num_train"] == 21 and result["num_val"] == 12
    assert result["results"]["top-1"] > 100 / 3 + 25  # chance is 33 %


@pytest.mark.parametrize("protocol, flag", [("transfer", "--folder"), ("video", "--aggregation")])
def test_launchers_take_the_protocol_flags(protocol, flag, capsys):
    from dinov2.run.eval import launcher

    with pytest.raises(SystemExit):
        launcher.launch(protocol, ["--help"])
    help_text = capsys.readouterr().out
    assert flag in help_text and "--nodes" in help_text and "--model" in help_text
