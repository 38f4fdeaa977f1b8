"""NYU Depth v2 in the file-list layout of the released depth configs (BTS / Monocular-Depth-Estimation-Toolbox).

``root/nyu_train.txt`` / ``root/nyu_test.txt`` list one sample per line: ``<image> <depth> <focal>`` with paths
relative to ``root`` (a leading ``/`` is ignored), e.g. ``/kitchen_0028b/rgb_00045.jpg
/kitchen_0028b/sync_depth_00045.png 518.8579``; a depth of ``None`` skips the line. Depth PNGs hold millimetres
(``depth_scale=1000``). Samples are sorted by image path, as the toolbox does. Dataset string:
``NYU:root=PATH:split=TRAIN|TEST[:split_file=PATH][:depth_scale=1000]``.
"""

from __future__ import annotations

from pathlib import Path

from .dense import DenseDataset, format_paths
from .image_folder import check_root

__all__ = ["NYU"]

_SPLIT_FILES = {"TRAIN": "nyu_train.txt", "TEST": "nyu_test.txt", "VAL": "nyu_test.txt"}


def read_split_file(root: Path, split_file: Path) -> list[tuple[Path, Path]]:
    """``[(image, depth)]`` listed by ``split_file`` (sorted by image path); missing files are an error."""
    if not split_file.is_file():
        raise FileNotFoundError(f"NYU split file {str(split_file)!r} does not exist (expected under root or given)")
    pairs = []
    for number, line in enumerate(split_file.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2:
            raise ValueError(f"{split_file}:{number}: expected '<image> <depth> [focal]', got {line!r}")
        if fields[1] == "None":
            continue
        pairs.append((root / fields[0].lstrip("/\\"), root / fields[1].lstrip("/\\")))
    missing = [p for pair in pairs for p in pair if not p.is_file()]
    if missing:
        listed = format_paths(missing)
        raise FileNotFoundError(f"NYU: {len(missing)} file(s) listed in {split_file} do not exist: {listed}")
    return sorted(pairs)


class NYU(DenseDataset):
    """NYU Depth v2 ``TRAIN`` (``nyu_train.txt``) or ``TEST`` (``nyu_test.txt``); depth in metres, 0 = invalid."""

    def __init__(self, *, root: str, split: str = "TRAIN", split_file: str | None = None,
                 depth_scale: float = 1000.0, **kwargs) -> None:  # fmt: skip
        split = str(getattr(split, "name", split)).upper()
        if split not in _SPLIT_FILES:
            raise ValueError(f"NYU split must be TRAIN or TEST, got {split!r}")
        base = check_root(root, "NYU")
        listing = Path(split_file).expanduser() if split_file else base / _SPLIT_FILES[split]
        pairs = read_split_file(base, listing)
        super().__init__(root=str(base), pairs=pairs, kind="depth", depth_scale=depth_scale, **kwargs)
        self.split = split
