"""The vendored reference files (``tests/reference/``): complete, intact, lossless and in step with the generator's.

Every other reference test reads only ``tests/reference/``; ``test_vendored_files_match_the_shared_reference`` is the
one test that needs ``../shared/reference`` (or ``$DINOV2_SHARED_REFERENCE``) and skips without it.
"""

from __future__ import annotations

import lzma

import pytest
import torch

from tests.conftest import load_reference
from tests.reference_files import (
    REFERENCE_DIR,
    SHARED_REFERENCE_DIR,
    SYNC_COMMAND,
    ReferenceError,
    pack,
    read_manifest,
    read_reference,
    sha256,
    unpack,
    unpacked_bytes,
)

# every file a test reads through load_reference; a file dropped from the manifest fails here by name
USED = [
    "backbones.pt",
    "depth_heads.pt",
    "dinov3_public.pt",
    "heads_losses.pt",
    "keys_shapes.json",
    "param_groups.json",
    "schedules.json",
]


def test_every_used_file_is_vendored_intact():
    files = read_manifest()["files"]
    assert sorted(set(USED) - set(files)) == [], f"not vendored: run {SYNC_COMMAND} <name>"
    for entry in files.values():
        stored = (REFERENCE_DIR / entry["stored_as"]).read_bytes()
        assert sha256(stored) == entry["stored_sha256"], f"{entry['stored_as']} changed: run {SYNC_COMMAND}"


@pytest.mark.parametrize("name", USED)
def test_unpacked_files_are_the_released_bytes(name):
    """Lossless end to end: what a test loads is the generator's own file, byte for byte."""
    entry = read_manifest()["files"][name]
    data = unpacked_bytes(name)  # checks unpacked_sha256
    assert sha256(data) == entry["source_sha256"] and len(data) == entry["source_bytes"]


def test_packing_is_lossless_and_deterministic():
    for data in (b"", b"abc", bytes(range(256)) * 3 + b"x", torch.randn(1001).numpy().tobytes()):
        assert unpack(pack(data)) == data
        assert pack(data) == pack(data)
    with pytest.raises(ReferenceError, match="header"):
        unpack(lzma.compress(b"not packed"))


def test_a_missing_file_is_a_failure_naming_the_file_and_the_command(tmp_path):
    with pytest.raises(pytest.fail.Exception, match=r"'no_such\.json' is not vendored.*sync_reference\.py no_such"):
        load_reference("no_such.json")
    (tmp_path / "MANIFEST.json").write_text(
        '{"files": {"backbones.pt": {"stored_as": "backbones.pt.shuffled.xz", "packing": "shuffle4-xz"}}}'
    )
    with pytest.raises(ReferenceError, match=r"backbones\.pt\.shuffled\.xz is missing.*sync_reference\.py"):
        read_reference("backbones.pt", tmp_path)
    with pytest.raises(ReferenceError, match=r"'dinov3_public\.pt' is not vendored.*sync_reference\.py dinov3_public"):
        read_reference("dinov3_public.pt", tmp_path)


@pytest.mark.skipif(
    not SHARED_REFERENCE_DIR.is_dir(),
    reason=f"no generator folder at {SHARED_REFERENCE_DIR} (set DINOV2_SHARED_REFERENCE): the vendored files are used",
)
def test_vendored_files_match_the_shared_reference():
    stale = []
    for name, entry in read_manifest()["files"].items():
        source = SHARED_REFERENCE_DIR / name
        if not source.is_file() or sha256(source.read_bytes()) != entry["source_sha256"]:
            stale.append(name)
    assert not stale, f"{', '.join(stale)} changed in {SHARED_REFERENCE_DIR}: run {SYNC_COMMAND} and commit"
