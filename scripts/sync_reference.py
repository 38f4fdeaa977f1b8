"""Copy the released-code reference files the tests use from ``../shared/reference`` into ``tests/reference``.

    python scripts/sync_reference.py                   # re-sync every file listed in tests/reference/MANIFEST.json
    python scripts/sync_reference.py dinov3_public.pt  # add (or re-sync) a file by name
    python scripts/sync_reference.py --source DIR      # another copy of the generator's folder

JSON files are copied byte for byte. ``.pt`` files are stored packed (``pack``: bytes regrouped in 4-byte planes,
then xz; lossless): every file unpacks to the generator's bytes. Nothing is regenerated from a seed instead of
stored: float32 ``torch.randn`` gives other last bits on CPUs without AVX2 (and on ARM) than on the x86 machine that
wrote the files. The output is deterministic: running it twice gives the same bytes. Layout and why:
``tests/reference/README.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing
from tests.reference_files import (  # noqa: E402
    MANIFEST,
    REFERENCE_DIR,
    SHARED_REFERENCE_DIR,
    pack,
    sha256,
    unpack,
)


def sync_file(name: str, source: Path, dest: Path) -> dict:
    """Write the vendored form of ``source/name`` into ``dest``; return its manifest entry."""
    original = (source / name).read_bytes()
    entry = {"source_bytes": len(original), "source_sha256": sha256(original)}
    if name.endswith(".json"):
        stored, packing, stored_as = original, "verbatim", name
    else:
        stored, packing, stored_as = pack(original), "shuffle4-xz", f"{name}.shuffled.xz"
        if unpack(stored) != original:
            raise RuntimeError(f"packing {name} is not lossless")
    (dest / stored_as).write_bytes(stored)
    return entry | {
        "packing": packing,
        "stored_as": stored_as,
        "stored_bytes": len(stored),
        "stored_sha256": sha256(stored),
        "unpacked_sha256": sha256(original),
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
