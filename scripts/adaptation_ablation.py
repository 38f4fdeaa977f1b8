"""Which adaptation settings keep a trained backbone's features while it learns new images? (issue 22)

    python scripts/adaptation_ablation.py [--output-dir D] [--image-size PX] [--pretrain-iterations N]
                                          [--adapt-iterations M] [--seeds 0 1 ...] [--settings scratch recipe ...]
                                          [--threads T]

The digits experiment of ``dinov2/train/adapt_digits.py``: a small ViT trained from scratch on the digits 0-4
plays the released model; each setting adapts it on the digits 5-9 through the trainer; the table gives the k-NN
top-1 (k=10, held-out images) on the old and new digits before and after. Settings: ``scratch`` is the from-scratch
demo recipe (``configs/train/demo_cpu.yaml``: no head warm-up, cold teacher 0.04 -> 0.07, momentum 0.992, layer
decay 0.9, last-layer freeze); ``recipe`` is ``configs/train/adapt_demo_cpu.yaml``; the others are the recipe with
one setting changed. Learning rates are the experiment's from-scratch lr (``Scale.base_lr``) times each config's
ratio to the demo's. Each setting runs once per adaptation seed (``train.seed``); the table gives the mean and
each seed's change. Runs are done once per output directory: a second call with the same ``--output-dir``
resumes each finished run (the pretraining too) from its final checkpoint, with nothing to train, and trains only the
settings and seeds not there yet. Prints a Markdown table (CPU, with the defaults: about 20 minutes on 2 quiet cores,
30-40 on busy ones). Runs use ``--threads`` intra-op threads (default 2, the count the README's figures and the
test's margins were measured with: another count rounds sums differently and moves single runs by points).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dinov2.train.adapt_digits import (  # noqa: E402
    SCRATCH,
    SETTINGS,
    Scale,
    adapt_opts,
    knn_top1,
    pretrain_opts,
    registered_digits_arch,
    run_folder,
    train_run,
    write_digits,
)
from dinov2.train.collapse_guard import CollapseDetected  # noqa: E402

# the README's table (named, so a setting added to SETTINGS does not change what a plain run measures)
DEFAULT_SETTINGS = [
    "scratch",
    "recipe",
    "recipe, no head warm-up",
    "recipe, from-scratch lr",
    "recipe, layer decay 0.9",
    "recipe, momentum 0.999",
    "recipe, cold teacher 0.04 -> 0.07",
    "recipe + Gram anchoring to the start",
]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default=None, help="runs and images (default: a temporary folder)")
    parser.add_argument(
        "--image-size",
        type=int,
        default=Scale.image_size,
        help="global crops (px); local crops half, patches a quarter",
    )
    parser.add_argument("--pretrain-iterations", type=int, default=Scale.pretrain_iterations)
    parser.add_argument("--adapt-iterations", type=int, default=Scale.adapt_iterations)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="adaptation seeds (train.seed)")
    parser.add_argument("--settings", nargs="+", default=DEFAULT_SETTINGS, choices=list(SETTINGS), metavar="NAME")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2, as measured)")
    return parser.parse_args(argv)


def scores(run: Path, weights: Path | None, root: Path, scale: Scale) -> tuple[float, float]:
    return tuple(knn_top1(weights, run / "config.yaml", root, half, scale.image_size) for half in ("old", "new"))


def adapt(name: str, released: Path, root: Path, out: Path, scale: Scale, seed: int) -> tuple[float, float, str]:
    run = out / run_folder(name, seed)
    config, opts = adapt_opts(name, released, root, scale, seed)
    note = ""
    try:
        export = train_run(run, config, opts)
    except CollapseDetected as stop:
        note = f"guard stopped it at iteration {stop.iteration} ({stop.signal}={stop.value:.3g})"
        exports = sorted(run.glob("eval/training_*/teacher_checkpoint.pth"), key=lambda p: int(p.parent.name[9:]))
        export = exports[-1] if exports else released
    return (*scores(run, export, root, scale), note)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    scale = Scale(
        image_size=args.image_size,
        local_size=args.image_size // 2,
        patch_size=args.image_size // 4,
        pretrain_iterations=args.pretrain_iterations,
        adapt_iterations=args.adapt_iterations,
    )
    out = Path(args.output_dir or tempfile.mkdtemp(prefix="adaptation_ablation_"))
    root = write_digits(out / "digits", size=scale.image_size)
    started = time.time()
    with registered_digits_arch():
        released = train_run(out / "released", SCRATCH, pretrain_opts(scale, root))
        random_old, random_new = scores(out / "released", None, root, scale)
        old, new = scores(out / "released", released, root, scale)
        runs = {name: [adapt(name, released, root, out, scale, seed) for seed in args.seeds] for name in args.settings}
    print(
        f"\nk-NN top-1 (%, k=10, held-out digits); {scale.image_size} px; {scale.pretrain_iterations} pretraining "
        f"iterations on 0-4, {scale.adapt_iterations} adaptation iterations on 5-9, seeds {args.seeds}; "
        f"{time.time() - started:.0f} s\n"
    )
    print("| setting | old digits 0-4 | new digits 5-9 | note |\n|---|---|---|---|")
    print(f"| random init | {random_old:.1f} | {random_new:.1f} | |")
    print(f"| released (start) | {old:.1f} | {new:.1f} | |")
    for name, results in runs.items():
        print(row(name, results, old, new))
    return 0


def row(name: str, results: list[tuple[float, float, str]], old: float, new: float) -> str:
    """A table row: the mean over seeds (and its change from the start), each seed's changes, the guard's notes."""
    mean_old, mean_new = (sum(r[i] for r in results) / len(results) for i in (0, 1))
    notes = [f"seed changes {', '.join(f'{r[0] - old:+.1f}/{r[1] - new:+.1f}' for r in results)}"] * (len(results) > 1)
    notes += [r[2] for r in results if r[2]]
    cells = f"{mean_old:.1f} ({mean_old - old:+.1f}) | {mean_new:.1f} ({mean_new - new:+.1f})"
    return f"| {name} | {cells} | {'; '.join(notes)} |"


if __name__ == "__main__":
    sys.exit(main())
