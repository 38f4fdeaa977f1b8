"""The vendored reference files of the released code (``tests/reference/``): packing, manifest and reading.

One module for both sides: ``scripts/sync_reference.py`` writes the files with ``pack`` and the tests read
them with ``read_reference``. Layout and history: ``tests/reference/README.md``.
"""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import os
from pathlib import Path

import numpy as np
import torch

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
MANIFEST = REFERENCE_DIR / "MANIFEST.json"
# the generator's originals beside the checkout: only the sync check and the sync script read them
SHARED_REFERENCE_DIR = Path(
    os.environ.get("DINOV2_SHARED_REFERENCE", Path(__file__).resolve().parents[2] / "shared" / "reference")
)
SYNC_COMMAND = "python scripts/sync_reference.py"

PACKED_MAGIC = b"dinov2-reference shuffle4 xz\n"


class ReferenceError(RuntimeError):
    """A vendored reference file is missing, corrupt or out of date."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pack(data: bytes) -> bytes:
    """Lossless: bytes regrouped by position in 4-byte words (float32 exponents together), then xz."""
    padded = data + bytes(-len(data) % 4)
    planes = np.frombuffer(padded, dtype=np.uint8).reshape(-1, 4).T.tobytes()  # [4, n/4]
    header = PACKED_MAGIC + len(data).to_bytes(8, "little")
    return lzma.compress(header + planes, preset=9 | lzma.PRESET_EXTREME)


def unpack(blob: bytes) -> bytes:
    """Inverse of ``pack``."""
    raw = lzma.decompress(blob)
    if not raw.startswith(PACKED_MAGIC):
        raise ReferenceError("not a packed reference file (bad header)")
    start = len(PACKED_MAGIC) + 8
    length = int.from_bytes(raw[len(PACKED_MAGIC) : start], "little")
    return np.frombuffer(raw[start:], dtype=np.uint8).reshape(4, -1).T.tobytes()[:length]


def read_manifest(directory: Path = REFERENCE_DIR) -> dict:
    path = directory / MANIFEST.name
    if not path.is_file():
        raise ReferenceError(f"reference manifest {path} is missing: restore tests/reference/ or run {SYNC_COMMAND}")
    return json.loads(path.read_text())


def unpacked_bytes(name: str, directory: Path = REFERENCE_DIR) -> bytes:
    """The bytes of reference file ``name`` as the manifest describes them (checked against its sha256)."""
    entry = read_manifest(directory)["files"].get(name)
    if entry is None:
        raise ReferenceError(f"reference file {name!r} is not vendored in {directory}: run {SYNC_COMMAND} {name}")
    path = directory / entry["stored_as"]
    if not path.is_file():
        raise ReferenceError(f"reference file {path} is missing: restore it from git or run {SYNC_COMMAND}")
    data = path.read_bytes()
    if entry["packing"] == "shuffle4-xz":
        data = unpack(data)
    if sha256(data) != entry["unpacked_sha256"]:
        raise ReferenceError(f"reference file {path} does not match MANIFEST.json: run {SYNC_COMMAND}")
    return data


def read_reference(name: str, directory: Path = REFERENCE_DIR):
    """Reference file ``name`` (e.g. ``"backbones.pt"``) as the released generator wrote it."""
    data = unpacked_bytes(name, directory)
    if name.endswith(".json"):
        return json.loads(data)
    return torch.load(io.BytesIO(data), weights_only=True)
