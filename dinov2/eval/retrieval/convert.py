"""``python -m dinov2.eval.retrieval.convert gnd_roxford5k.pkl [gnd_roxford5k.json]``: the one-time conversion of a
released ground-truth pickle to JSON (read with the restricted unpickler; the JSON is used when present)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from dinov2.eval.retrieval.data import convert_ground_truth
from dinov2.utils.cli import ArgumentParser, usage_errors
from dinov2.utils.safe_pickle import UnsafePickleError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Convert; the target defaults to the source with a ``.json`` suffix."""
    parser = ArgumentParser(description="Convert a revisited Oxford / Paris ground-truth pickle to JSON")
    parser.add_argument("source", help="gnd_<dataset>.pkl")
    parser.add_argument("target", nargs="?", help="output JSON (default: beside the source)")
    args = parser.parse_args(argv)
    target = Path(args.target or Path(args.source).with_suffix(".json"))
    with usage_errors(parser, FileNotFoundError, ValueError, UnsafePickleError):
        truth = convert_ground_truth(args.source, target)
    print(f"{target}: {len(truth.imlist)} database images, {len(truth.qimlist)} queries")
    return 0


if __name__ == "__main__":
    sys.exit(main())
