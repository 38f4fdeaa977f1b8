"""Copy the released-code reference files the tests use from ``../shared/reference`` into ``tests/reference``.

    python scripts/sync_reference.py                   # re-sync every file listed in tests/reference/MANIFEST.json
    python scripts/sync_reference.py dinov3_public.pt  # add (or re-sync) a file by name
    python scripts/sync_reference.py --source DIR      # another copy of the generator's folder

JSON files are copied byte for byte. ``.pt`` files are stored packed (``pack``: bytes regrouped in 4-byte planes,
then xz; lossless), after replacing the tensors that a documented seed recipe regenerates bit-exactly by a recipe
marker (``RECIPES``; checked here before relying on it, and again by sha256 when a test reads the file). The output
is deterministic: running it twice gives the same bytes. What was shrunk and why: ``tests/reference/README.md``.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing
from tests.reference_files import (  # noqa: E402
    MANIFEST,
    REFERENCE_DIR,
    SHARED_REFERENCE_DIR,
    pack,
    sha256,
    unpack,
)

# file -> function replacing regenerable tensors by markers. None is used: float32 ``torch.randn`` gives other last
# bits on CPUs without AVX2 (and on ARM) than on the x86 machine that wrote the files, so a marker would fail there
# (depth_heads.pt's inputs, randn seeded from "<meta.seed>/input/<case>", regenerate bit-exactly on AVX2 only; they
# are stored, 0.77 MB packed).
# backbones.pt and heads_losses.pt have no recipe at all: their seed derivation is not documented.
RECIPES: dict = {}


def _deterministic_save(obj) -> bytes:
    buffer = io.BytesIO()  # a stream, not a path: the archive's folder name is then always "archive"
    torch.save(obj, buffer)
    return buffer.getvalue()


def sync_file(name: str, source: Path, dest: Path) -> dict:
    """Write the vendored form of ``source/name`` into ``dest``; return its manifest entry."""
    original = (source / name).read_bytes()
    entry = {"source_bytes": len(original), "source_sha256": sha256(original), "regenerated": []}
    if name.endswith(".json"):
        stored, unpacked, packing, stored_as = original, original, "verbatim", name
    else:
        unpacked = original
        if name in RECIPES:
            obj, entry["regenerated"] = RECIPES[name](torch.load(source / name, weights_only=True))
            if entry["regenerated"]:
                unpacked = _deterministic_save(obj)
        stored, packing, stored_as = pack(unpacked), "shuffle4-xz", f"{name}.shuffled.xz"
        if unpack(stored) != unpacked:
            raise RuntimeError(f"packing {name} is not lossless")
    (dest / stored_as).write_bytes(stored)
    return entry | {
        "packing": packing,
        "stored_as": stored_as,
        "stored_bytes": len(stored),
        "stored_sha256": sha256(stored),
        "unpacked_sha256": sha256(unpacked),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="files to add or re-sync (default: those in the manifest)")
    parser.add_argument("--source", type=Path, default=SHARED_REFERENCE_DIR, help="the generator's folder")
    parser.add_argument("--dest", type=Path, default=REFERENCE_DIR, help="the vendored folder")
    args = parser.parse_args(argv)
    manifest_path = args.dest / MANIFEST.name
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"files": {}}
    names = args.names or sorted(manifest["files"])
    if not names:
        parser.error("nothing to sync: name the files, e.g. backbones.pt")
    missing = [name for name in names if not (args.source / name).is_file()]
    if missing:
        parser.error(f"not found in --source {args.source}: {', '.join(missing)}")
    args.dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        manifest["files"][name] = entry = sync_file(name, args.source, args.dest)
        print(f"{name}: {entry['source_bytes']} -> {entry['stored_bytes']} bytes ({entry['stored_as']})")
    manifest["format"] = 1
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
