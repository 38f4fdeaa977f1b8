"""Video clips for classification from frame features: uniformly sampled frames of each clip, with its class.

Layout: ``<root>/<class>/<clip>`` where a clip is a folder of decoded frames (any image files, in name order, e.g.
``ffmpeg -i clip.mp4 clip/%05d.jpg``) or a video file (``.mp4 .avi .webm .mkv .mov``), read through torchvision's
video IO when this torchvision has it (``torchvision.io.read_video`` with PyAV; removed in recent torchvision
releases: decode to frame folders then). Classes are the sorted sub-folders of ``root``.

Frames (:func:`sample_frame_indices`): ``n`` frames at ``round(linspace(0, T - 1, n))`` of a clip of T frames (first
and last included; frames repeat when T < n). The DINOv2 paper says only "8 evenly spaced frames".
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import functional as TF

from .image_folder import IMG_EXTENSIONS

__all__ = ["VIDEO_EXTENSIONS", "sample_frame_indices", "read_video_frames", "VideoClips"]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov")


def sample_frame_indices(total: int, num_frames: int) -> list[int]:
    """``num_frames`` indices evenly spread over ``total`` frames: ``round(linspace(0, total - 1, num_frames))``."""
    if total < 1 or num_frames < 1:
        raise ValueError(f"a clip needs at least one frame and one sampled frame, got {total} and {num_frames}")
    return np.rint(np.linspace(0, total - 1, num_frames)).astype(int).tolist()


def read_video_frames(path: str | os.PathLike, num_frames: int) -> list[Image.Image]:
    """``num_frames`` uniformly sampled frames of a video file (torchvision's video IO; see the module docstring)."""
    read_video = getattr(torchvision.io, "read_video", None)
    if read_video is None:
        raise ImportError(
            f"reading the video file {str(path)!r} needs torchvision's video IO (torchvision.io.read_video with PyAV), "
            f"which torchvision {torchvision.__version__} does not have; decode the clips into frame folders instead "
            "(ffmpeg -i clip.mp4 clip/%05d.jpg)"
        )
    video, _, _ = read_video(str(path), pts_unit="sec", output_format="TCHW")  # [T, 3, H, W] uint8
    if len(video) == 0:
        raise ValueError(f"video file {str(path)!r} has no decodable frame")
    return [Image.fromarray(video[i].permute(1, 2, 0).numpy()) for i in sample_frame_indices(len(video), num_frames)]


def _frames_of_folder(folder: Path, num_frames: int) -> list[Image.Image]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMG_EXTENSIONS and not p.name.startswith("."))
    if not files:
        raise ValueError(f"clip folder {str(folder)!r} holds no frame image; expected e.g. 00001.jpg, 00002.jpg, ...")
    frames = []
    for i in sample_frame_indices(len(files), num_frames):
        with Image.open(files[i]) as image:
            frames.append(image.convert("RGB"))
    return frames


class VideoClips(Dataset):
    """``(frames [num_frames, 3, H, W], class index)`` of the clips under ``root`` (see the module docstring);
    ``transform`` maps each PIL frame to a tensor (the same deterministic eval transform for every frame)."""

    def __init__(self, root: str | os.PathLike, num_frames: int = 8, transform: Callable | None = None):
        self.root, self.num_frames, self.transform = Path(root), int(num_frames), transform
        if not self.root.is_dir():
            raise FileNotFoundError(f"video root {str(root)!r} is not a folder; expected <root>/<class>/<clip>")
        self.classes = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        self.clips: list[tuple[Path, int]] = []
        for label, name in enumerate(self.classes):
            for clip in sorted((self.root / name).iterdir()):
                if clip.is_dir() or clip.suffix.lower() in VIDEO_EXTENSIONS:
                    self.clips.append((clip, label))
        if not self.clips:
            raise ValueError(f"no clip under {str(root)!r}: expected <class>/<clip folder or video file>")

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.clips[index]
        if path.is_dir():
            frames = _frames_of_folder(path, self.num_frames)
        else:
            frames = [frame.convert("RGB") for frame in read_video_frames(path, self.num_frames)]
        transform = self.transform or TF.to_tensor
        return torch.stack([transform(frame) for frame in frames]), label
