"""``python -m dinov2.plot RUN_DIR [RUN_DIR ...] --output curves.png``: training curves of runs on the same axes.

Every loss term, learning rate, weight decay, teacher momentum and temperature, gradient norms, images/s and the
evaluation results found in the run folders (see :mod:`dinov2.visualize.plot`). Needs matplotlib (``plot`` extra).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dinov2.utils.cli import NO_CONFIG_NOTE, ArgumentParser, check_writable_dir, usage_errors
from dinov2.visualize.plot import panels, plot_runs, read_run


def get_args_parser() -> argparse.ArgumentParser:
    """``RUN_DIR [RUN_DIR ...] --output F`` (no config, no overrides)."""
    parser = ArgumentParser(
        description="Training curves of one or several runs on the same axes, and their evaluation results.",
        epilog=NO_CONFIG_NOTE,
    )
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="training output folders (--output-dir of a run)")
    parser.add_argument("--output", default="curves.png", help="image file (.png, .pdf, .svg)")
    parser.add_argument("--title", default=None, help="figure title")
    parser.add_argument("--columns", type=int, default=3, help="panels per row")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``dinov2-plot`` / ``python -m dinov2.plot``: parse ``argv`` (default ``sys.argv``), write the figure; returns
    the exit status."""
    parser = get_args_parser()
    args = parser.parse_args(argv)
    check_writable_dir(parser, Path(args.output).parent, "--output")  # before the runs are read
    names = [str(p).rstrip("/") for p in args.runs]
    short = [n.rsplit("/", 1)[-1] for n in names]
    with usage_errors(parser, FileNotFoundError, ValueError, flag="runs"):  # not a run folder, a damaged metrics file
        runs = [
            read_run(path, name) for path, name in zip(args.runs, short if len(set(short)) == len(short) else names)
        ]
    output = plot_runs(runs, args.output, title=args.title, columns=args.columns)
    print(f"wrote {output}: {len(panels(runs))} panels, runs {', '.join(run.name for run in runs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
