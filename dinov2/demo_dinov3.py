"""``python -m dinov2.demo dinov3``: the DINOv3 recipe on one CPU, in three phases, with k-NN after each.

A small RoPE ViT (``vit_demo3``: 128 dim, 6 blocks, 4 heads, 2 storage tokens, RoPE coordinate rescaling in
training; not a released model) is trained on the demo's generated images with ``configs/train/demo_cpu_dinov3.yaml``
(a DINOv3 config: DINOv3's defaults and heads), each phase adding its keys (:data:`PHASES`):

1. ``ssl`` (150 iterations): DINOv3's SSL losses (Sinkhorn-Knopp centring, separate iBOT head) at 64 px global /
   32 px local crops, batch 16;
2. ``gram`` (50 iterations): Gram anchoring, the Gram teacher starting as the phase-1 teacher (``gram.ckpt``) and
   refreshed from the EMA teacher after 25 iterations, seeing 96 px crops (1.5x) resized to the student's 4 x 4 grid;
3. ``high_res`` (25 iterations): high-resolution adaptation, each iteration at 64 px or 96 px global crops (32 / 48 px
   local, Gram teacher at 1.5x, not refreshed), the recipe of ``dinov3_vit7b16_high_res_adapt.yaml`` scaled down.

Each phase starts from the previous phase's teacher backbone (heads start afresh) in ``<output-dir>/<phase>``; the
k-NN top-1 on held-out images of a random init and of each phase's teacher is printed at the end. Re-running resumes
each phase from its checkpoints (``--no-resume`` starts every phase afresh).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

from dinov2.configs import config_path
from dinov2.utils.cli import ArgumentParser, add_output_dir, check_writable_dir, usage_errors
from dinov2.utils.config import ConfigKeyError, ConfigValueError

logger = logging.getLogger("dinov2")

NB_KNN = (10, 20)
CONFIG = "train/demo_cpu_dinov3"  # phase 1 (ssl); the other phases add their keys below
# Each phase's keys on top of the demo config, as command-line overrides (so each phase's config.yaml is a DINOv3
# config that every tool reopens: load_backbone("<output-dir>/<phase>"), the eval commands, the scripts).
PHASES = {
    "ssl": [],
    "gram": [
        "optim.epochs=1",
        "optim.warmup_epochs=0",
        "optim.lr=0.0005",
        "evaluation.eval_period_iterations=50",
        "crops.gram_teacher_crops_size=96",
        "crops.gram_teacher_no_distortions=true",
        "gram.use_loss=true",
        "gram.img_level=true",
        "gram.loss_weight=1.0",
        "gram.update_frequency=25",
    ],
    "high_res": [
        "optim.epochs=1",
        "optim.warmup_epochs=0",
        "optim.lr=0.00025",
        "train.OFFICIAL_EPOCH_LENGTH=25",
        "evaluation.eval_period_iterations=25",
        "checkpointing.period=25",
        "crops.global_crops_size=[64,96]",
        "crops.local_crops_size=[32,48]",
        "crops.gram_teacher_crops_size=[96,144]",
        "crops.global_local_crop_pairs_ratios=[0.3,0.7]",
        "crops.gram_teacher_no_distortions=true",
        "gram.use_loss=true",
        "gram.img_level=true",
        "gram.loss_weight=1.0",
        "gram.rep_update=false",
    ],
}


def phase_cfg(output_dir: Path, phase: str, previous: Path | None, opts: list[str]) -> DictConfig:
    """``configs/train/demo_cpu_dinov3.yaml`` with ``phase``'s keys, the generated data under ``output_dir``, the
    previous phase's teacher export (``previous``: the student's start and the first Gram teacher) and ``opts``."""
    from dinov2.utils.config import load_cfg

    data = f"train.dataset_path=Synthetic:root={output_dir}/data:split=TRAIN:class_colours=true"
    start = [] if previous is None else [f"student.pretrained_weights={previous}", f"gram.ckpt={previous}"]
    return load_cfg(config_path(CONFIG), [*PHASES[phase], data, *start, *opts], output_dir / phase)


def train_phase(cfg: DictConfig, resume: bool) -> Path:
    """Train one phase as ``dinov2/train/train.py`` does after its set-up; returns its last teacher export."""
    from dinov2 import distributed
    from dinov2.train.run_lock import RunLock
    from dinov2.train.train import run
    from dinov2.utils.config import apply_scaling_rules_to_cfg, default_setup, write_config

    out = Path(cfg.train.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    distributed.enable(overwrite=True)
    with RunLock(out):
        default_setup(argparse.Namespace(output_dir=str(out)), seed=cfg.train.seed)
        apply_scaling_rules_to_cfg(cfg)
        write_config(cfg, out)
        run(cfg, argparse.Namespace(eval_only=False, no_resume=not resume))
    last = cfg.optim.epochs * cfg.train.OFFICIAL_EPOCH_LENGTH - 1  # each phase exports after its last iteration
    export = out / "eval" / f"training_{last}" / "teacher_checkpoint.pth"
    if not export.is_file():
        raise FileNotFoundError(f"phase {out.name} left no teacher export {export}")
    return export


def _backbone(cfg: DictConfig, export: Path | None, seed: int = 0) -> torch.nn.Module:
    """The teacher in ``export`` (or, without one, the seeded random init) of ``cfg``'s arch, through the backbone
    door, on the CPU."""
    from dinov2.features import load_backbone

    loaded = load_backbone(
        config=cfg, weights=export, random_init=export is None, seed=seed, device="cpu", validate=False
    )
    return loaded.model


def knn(model: torch.nn.Module, output_dir: Path, crop_size: int) -> dict[int, float]:
    """k-NN top-1 (percent, per k) on the generated held-out images, the training images as the index."""
    from dinov2.eval.knn import eval_knn_with_model

    data = f"Synthetic:root={output_dir}/data:class_colours=true"
    results = eval_knn_with_model(
        model.eval(),
        None,
        f"{data}:split=TRAIN",
        f"{data}:split=VAL",
        nb_knn=NB_KNN,
        crop_size=crop_size,
        num_workers=0,
        batch_size=128,
    )
    return {k: results[f"('full', {k}) Top 1"] for k in NB_KNN}


def run_demo(output_dir: str, opts: list[str], resume: bool = True) -> dict[str, dict[int, float]]:
    """Train the three phases, then k-NN top-1 (percent, per k) of a random init and of each phase's teacher."""
    out = Path(output_dir)
    results: dict[str, dict[int, float]] = {}
    previous, exports = None, {}
    for phase in PHASES:
        cfg = phase_cfg(out, phase, previous, opts)
        previous = exports[phase] = train_phase(cfg, resume)
    eval_cfg = phase_cfg(out, "ssl", None, opts)
    results["random init"] = knn(_backbone(eval_cfg, None, seed=eval_cfg.train.seed), out, 64)
    for phase, export in exports.items():
        results[f"{phase} ({export.parent.name})"] = knn(_backbone(eval_cfg, export), out, 64)
    results["high_res, k-NN at 96 px"] = knn(_backbone(eval_cfg, exports["high_res"]), out, 96)
    return results


def format_results(results: dict[str, dict[int, float]]) -> str:
    header = f"{'backbone':<28}" + "".join(f"{f'k={k} top-1':>14}" for k in NB_KNN)
    rows = [f"{name:<28}" + "".join(f"{acc[k]:>13.1f}%" for k in NB_KNN) for name, acc in results.items()]
    return "\n".join([header, "-" * len(header), *rows])


def main(argv: list[str]) -> int:
    """``python -m dinov2.demo dinov3 [--output-dir D] [--no-resume] [key=value ...]``."""
    parser = ArgumentParser(prog="python -m dinov2.demo dinov3", description=__doc__.split("\n\n")[0])
    add_output_dir(parser, "data, one folder per phase", default="demo_output_dinov3")
    parser.add_argument("--no-resume", action="store_true", help="train every phase from scratch")
    parser.add_argument("opts", nargs="*", metavar="KEY=VALUE", help="overrides of every phase's config")
    args = parser.parse_intermixed_args(argv)
    output_dir = Path(args.output_dir).resolve()
    with usage_errors(parser, ConfigKeyError, ConfigValueError):  # a bad override: exit 2 before any training
        for phase in PHASES:
            phase_cfg(output_dir, phase, None, args.opts)
    check_writable_dir(parser, output_dir, "--output-dir")  # after the overrides: a typo makes no folder
    print(format_results(run_demo(str(output_dir), args.opts, resume=not args.no_resume)))
    return 0
