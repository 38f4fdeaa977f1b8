"""ImageNet-22k in the released layout: one uncompressed tarball per class, read through ``mmap``.

Layout (``root``)::

    <class_id>.tar                 the images of one class (e.g. n01440764.tar)
    blocks/<class_id>.log          member list with block numbers, as printed by ``tar -R -tf <class_id>.tar``:
                                   "block <n>: <file name>" per member, last line "block <n>: ** Block of NULs **"

Metadata (``extra``), written once by ``ImageNet22k(root=..., extra=...).dump_extra()``:
``entries.npy`` (structured: ``class_index <u4``, ``class_id U``, ``start_offset <u4``,
``end_offset <u4``, ``filename U``) and ``class-ids.npy`` (``U``, by class index) — the released
names and dtypes. :func:`write_blocks_log` writes a ``blocks/*.log`` file without GNU tar.
"""

from __future__ import annotations

import gzip
import logging
import mmap
import os
import tarfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .extended import ExtendedVisionDataset
from .extra_metadata import ExtraMetadata
from .image_folder import check_root

logger = logging.getLogger("dinov2")

__all__ = ["ImageNet22k", "write_blocks_log"]

_BLOCK = 512  # tar block size, bytes
_NUL_BLOCK = "** Block of NULs **"
_SKIPPED_FILES = {"n06470073_47249.JPEG"}  # not an image; the released metadata leaves it out
_DEFAULT_MMAP_CACHE_SIZE = 16  # open tarballs kept mapped per process (each holds a file descriptor)


def write_blocks_log(tar_path: str | Path, log_path: str | Path) -> None:
    """Write the ``tar -R -tf`` style member list of an uncompressed tarball (headers' block numbers)."""
    lines = []
    with tarfile.open(tar_path, mode="r:") as archive:
        for member in archive.getmembers():
            if member.isfile():
                lines.append(f"block {member.offset // _BLOCK}: {member.name}")
        end_block = archive.offset // _BLOCK
    lines.append(f"block {end_block}: {_NUL_BLOCK}")
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    Path(log_path).write_text("\n".join(lines) + "\n")


def _read_blocks_log(path: str) -> list[tuple[int, str | None]]:
    """``[(block offset, file name or None for the end marker)]`` of a ``blocks/<class_id>.log`` file."""
    try:
        with open(path) as f:
            lines = [line.rstrip("\n") for line in f if line.strip()]
    except OSError as error:
        raise FileNotFoundError(f"cannot read ImageNet-22k blocks file {path!r} (from `tar -R -tf`)") from error
    entries = []
    for line in lines:
        block, _, name = line.partition(": ")
        if not block.startswith("block "):
            raise ValueError(f"{path}: unexpected line {line!r}; expected 'block <n>: <file name>'")
        entries.append((int(block[len("block ") :]), None if name == _NUL_BLOCK else name))
    if not entries or entries[-1][1] is not None:
        raise ValueError(f"{path}: the last line must be 'block <n>: {_NUL_BLOCK}'")
    return entries


class ImageNet22k(ExtraMetadata, ExtendedVisionDataset):
    """ImageNet-22k (all classes, one split); targets are class indices (int).

    A missing ``root`` raises at construction; missing metadata raises at first use with the command
    that creates it. Images are sliced out of memory-mapped tarballs (gzip-compressed members are
    inflated).
    """

    Labels = int

    def __init__(self, *, root: str, extra: str, mmap_cache_size: int = _DEFAULT_MMAP_CACHE_SIZE, **options) -> None:
        """``options``: the dataset options of :class:`ExtendedVisionDataset` (transforms, strict...)."""
        path = check_root(root, "ImageNet22k")
        super().__init__(str(path), **options)
        self._mmap_cache_size = mmap_cache_size
        self._mmaps: OrderedDict[str, mmap.mmap] = OrderedDict()
        self._set_extra_root(extra, "entries.npy", "ImageNet22k")

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_mmaps"] = OrderedDict()  # memory maps stay in their process
        return state

    # ------------------------------------------------------------------------------ metadata

    def _dump_extra_call(self) -> str:
        return f"ImageNet22k(root={self.root!r}, extra={self._extra_root!r}).dump_extra()"

    def _get_entries(self) -> np.ndarray:
        return self._cached_extra("entries.npy")

    def _get_class_ids(self) -> np.ndarray:
        return self._cached_extra("class-ids.npy")

    # ------------------------------------------------------------------------------- samples

    def _tarball(self, class_id: str) -> mmap.mmap:
        if class_id in self._mmaps:
            self._mmaps.move_to_end(class_id)
            return self._mmaps[class_id]
        with open(os.path.join(self.root, f"{class_id}.tar"), "rb") as f:
            mapped = mmap.mmap(f.fileno(), length=0, access=mmap.ACCESS_READ)
        self._mmaps[class_id] = mapped
        if len(self._mmaps) > self._mmap_cache_size:
            self._mmaps.popitem(last=False)[1].close()
        return mapped

    def describe_sample(self, index: int) -> str:
        entry = self._get_entries()[index]
        return f"{os.path.join(self.root, str(entry['class_id']) + '.tar')}:{entry['filename']}"

    def get_image_data(self, index: int) -> bytes:
        entry = self._get_entries()[index]
        start, end = int(entry["start_offset"]), int(entry["end_offset"])
        data = self._tarball(str(entry["class_id"]))[start + _BLOCK : end]  # skip the member's header block
        if data[:2] == b"\x1f\x8b":  # a few members are gzip-compressed images
            data = gzip.decompress(data)
        return data

    def get_target(self, index: int) -> int:
        return int(self._get_entries()[index]["class_index"])

    def get_targets(self) -> np.ndarray:
        return self._get_entries()["class_index"]

    def get_class_id(self, index: int) -> str:
        return str(self._get_entries()[index]["class_id"])

    def get_class_ids(self) -> np.ndarray:
        return self._get_entries()["class_id"]

    def find_class_id(self, class_index: int) -> str:
        return str(self._get_class_ids()[class_index])

    def __len__(self) -> int:
        return len(self._get_entries())

    # -------------------------------------------------------------------------- dump_extra

    def _scan_tarballs(self, root: str) -> tuple[list[tuple[int, str, int, int, str]], list[str]]:
        class_ids = sorted(name[: -len(".tar")] for name in os.listdir(root) if name.endswith(".tar"))
        if not class_ids:
            raise ValueError(f"ImageNet22k: no <class_id>.tar files in {root!r}")
        rows = []
        for class_index, class_id in enumerate(class_ids):
            blocks = _read_blocks_log(os.path.join(root, "blocks", f"{class_id}.log"))
            for (block, name), (next_block, _) in zip(blocks, blocks[1:]):
                if name is None or name in _SKIPPED_FILES:
                    continue
                rows.append((class_index, class_id, _BLOCK * block, _BLOCK * next_block, name))
        return rows, class_ids

    def dump_extra(self, root: str | None = None) -> None:
        """Read ``blocks/*.log`` of the tarballs under ``root`` (default: the dataset root); write ``extra``."""
        rows, class_ids = self._scan_tarballs(root or self.root)
        offset_type = "<u4" if max(r[3] for r in rows) < 2**32 else "<u8"  # the release always uses <u4
        dtype = np.dtype(
            [
                ("class_index", "<u4"),
                ("class_id", f"U{max(len(c) for c in class_ids)}"),
                ("start_offset", offset_type),
                ("end_offset", offset_type),
                ("filename", f"U{max(len(r[4]) for r in rows)}"),
            ]
        )
        self._save_extra(np.array(rows, dtype=dtype), "entries.npy")
        class_count = max(r[0] for r in rows) + 1  # class-ids.npy is indexed by class_index
        id_dtype = f"U{max(len(c) for c in class_ids)}"
        self._save_extra(np.array(class_ids[:class_count], dtype=id_dtype), "class-ids.npy")
        logger.info("ImageNet22k: wrote %d entries of %d classes to %s", len(rows), len(class_ids), self._extra_root)
