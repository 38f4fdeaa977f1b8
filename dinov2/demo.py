"""The CPU demo: ``python -m dinov2.demo`` trains a small ViT with DINOv2 and shows that it learned.

1. generates a small labelled image set (``Synthetic``: 10 shape/texture classes, JPEG files) on first use;
2. trains with ``configs/train/demo_cpu.yaml`` (the released recipe scaled down: fp32, 2 CPU cores, minutes);
3. evaluates the exported teacher and a randomly initialised backbone of the same config with k-NN on the
   held-out images, and prints both accuracies.

Re-running resumes the training from its last checkpoint (``--no-resume`` starts afresh). Any training config
key can be overridden after the options (``optim.epochs=2``). ``python -m dinov2.demo features`` instead prints the
features a randomly initialised hub backbone gives for one generated image.

``python -m dinov2.demo distill`` distils the demo's SSL teacher (trained first when ``--output-dir`` holds no
teacher export) into a smaller student (``vit_pico``: 96 dim, 6 blocks; ``configs/train/demo_cpu_distill.yaml``)
in ``<output-dir>/distill``, then prints the k-NN top-1 of the teacher, the student EMA and a random init of the
student's architecture on the held-out images.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dinov2.configs import config_path
from dinov2.utils.cli import ArgumentParser, add_output_dir, check_writable_dir, usage_errors
from dinov2.utils.config import ConfigKeyError, ConfigValueError, load_cfg
from dinov2.utils.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

logger = logging.getLogger("dinov2")

NB_KNN = (10, 20)


def train_then_evaluate(output_dir: str, opts: list[str], resume: bool = True) -> dict[str, dict[str, float]]:
    """Train with the demo config, then k-NN top-1 (percent, per k) of a random-init and of the trained backbone."""
    from dinov2.train.train import get_args_parser
    from dinov2.train.train import main as train_main

    argv = ["--config-file", str(config_path("train/demo_cpu")), "--output-dir", output_dir]
    args = get_args_parser().parse_args(argv + ([] if resume else ["--no-resume"]) + list(opts))
    train_main(args)
    return evaluate(Path(output_dir), opts)


def latest_export(output_dir: Path) -> Path | None:
    """The newest ``eval/training_<it>/teacher_checkpoint.pth`` of a run, or None."""
    exports = sorted(output_dir.glob("eval/training_*/teacher_checkpoint.pth"), key=lambda p: int(p.parent.name[9:]))
    return exports[-1] if exports else None


def knn_top1(model: torch.nn.Module, cfg) -> dict[int, float]:
    """k-NN top-1 (percent, per k) of ``model`` on the demo's held-out images (index: the training images)."""
    from dinov2.eval.knn import eval_knn_with_model

    tokens = [t for t in cfg.train.dataset_path.split(":") if not t.startswith("split=")]
    data = ":".join(tokens)  # the training set without its split: TRAIN for the k-NN index, VAL for the queries
    knn = eval_knn_with_model(
        model.eval(),
        None,
        f"{data}:split=TRAIN",
        f"{data}:split=VAL",
        nb_knn=NB_KNN,
        crop_size=cfg.crops.global_crops_size,
        num_workers=0,
        batch_size=128,
    )
    return {k: knn[f"('full', {k}) Top 1"] for k in NB_KNN}


def _trained_and_random(output_dir: Path) -> tuple[torch.nn.Module, torch.nn.Module, Path, object]:
    """(latest exported model, seeded random init of its arch, the export, the run's config)."""
    from dinov2.eval.setup import build_model_for_eval
    from dinov2.models import build_model_from_cfg
    from dinov2.utils.config import load_cfg

    cfg = load_cfg(output_dir / "config.yaml")
    export = latest_export(output_dir)
    if export is None:
        raise FileNotFoundError(f"no teacher export under {output_dir}/eval: set evaluation.eval_period_iterations")
    torch.manual_seed(cfg.train.seed)
    random_init, _ = build_model_from_cfg(cfg, only_teacher=True)
    return build_model_for_eval(cfg, str(export), device=torch.device("cpu")), random_init, export, cfg


def evaluate(output_dir: Path, opts: list[str]) -> dict[str, dict[str, float]]:
    """k-NN top-1 of the randomly initialised backbone (seeded) and of the latest teacher export."""
    trained, random_init, export, cfg = _trained_and_random(output_dir)
    return _knn_rows((("random init", random_init, cfg), (f"trained ({export.parent.name})", trained, cfg)))


def _knn_rows(rows) -> dict[str, dict[str, float]]:
    """``{name: k-NN top-1 per k}`` of ``(name, model, config)`` rows."""
    results = {}
    for name, model, model_cfg in rows:
        logger.info("k-NN evaluation of the %s backbone", name)
        results[name] = knn_top1(model, model_cfg)
    return results


def _table(results: dict[str, dict[str, float]], width: int) -> list[str]:
    header = f"{'backbone':<{width}}" + "".join(f"{f'k={k} top-1':>14}" for k in NB_KNN)
    lines = [header, "-" * len(header)]
    return lines + [f"{name:<{width}}" + "".join(f"{acc[k]:>13.1f}%" for k in NB_KNN) for name, acc in results.items()]


def format_results(results: dict[str, dict[str, float]]) -> str:
    lines = _table(results, 24)
    (random_init, trained) = results.values()
    gain = trained[NB_KNN[-1]] - random_init[NB_KNN[-1]]
    lines.append(f"\nk-NN accuracy on held-out images: {gain:+.1f} points from self-supervised training")
    return "\n".join(lines)


def distill_then_evaluate(
    output_dir: str, opts: list[str], resume: bool = True, history: list | None = None
) -> dict[str, dict[str, float]]:
    """Distil the demo's SSL teacher in ``output_dir`` (trained first if it has no export) into the demo student
    in ``output_dir/distill``; k-NN top-1 (percent, per k) of the teacher, the student EMA and a random init.

    ``opts`` override the student's config; ``history`` receives ``(iteration, losses)`` of the distillation.
    """
    from dinov2.train.train import get_args_parser
    from dinov2.train.train import main as train_main

    out = Path(output_dir)

    if latest_export(out) is None:
        logger.info("no SSL teacher in %s: training the demo's teacher first", out)
        argv = ["--config-file", str(config_path("train/demo_cpu")), "--output-dir", str(out)]
        train_main(get_args_parser().parse_args(argv))
    teacher_export = latest_export(out)
    student_dir = out / "distill"
    argv = ["--config-file", str(config_path("train/demo_cpu_distill")), "--output-dir", str(student_dir)]
    argv += [] if resume else ["--no-resume"]  # options before the key=value overrides
    argv += [
        f"distillation.full_cfg_path={out / 'config.yaml'}",
        f"distillation.checkpoint_path={teacher_export}",
        f"train.dataset_path=Synthetic:root={out}/data:split=TRAIN:class_colours=true",
    ]
    args = get_args_parser().parse_args(argv + list(opts))
    train_main(args, history=history)
    student, random_init, export, cfg = _trained_and_random(student_dir)
    teacher, _, _, teacher_cfg = _trained_and_random(out)
    rows = (
        (f"teacher ({teacher_cfg.student.arch})", teacher, teacher_cfg),
        (f"student EMA ({cfg.student.arch})", student, cfg),
        ("random init (student)", random_init, cfg),
    )
    return _knn_rows(rows)


def format_distill_results(results: dict[str, dict[str, float]]) -> str:
    lines = _table(results, 28)
    teacher, student, random_init = results.values()
    k = NB_KNN[-1]
    lines.append(
        f"\nk-NN accuracy on held-out images: the distilled student EMA is {student[k] - random_init[k]:+.1f} points "
        f"over random init, {student[k] - teacher[k]:+.1f} points from its teacher"
    )
    return "\n".join(lines)


def synthetic_image(height: int = 224, width: int = 308) -> Image.Image:
    """An RGB gradient with a checkerboard: something with structure, no file needed."""
    y, x = np.mgrid[0:height, 0:width]
    checker = ((y // 28 + x // 28) % 2) * 80
    rgb = np.stack([x * 255 // width, y * 255 // height, checker + 60], axis=-1).astype(np.uint8)
    return Image.fromarray(rgb)


def features_demo(registers: bool) -> None:
    """Print the features of a randomly initialised ViT-S/14 hub backbone for one generated image."""
    from dinov2.hub.backbones import dinov2_vits14, dinov2_vits14_reg

    torch.manual_seed(0)
    model = (dinov2_vits14_reg if registers else dinov2_vits14)(pretrained=False).eval()
    pixels = torch.from_numpy(np.asarray(synthetic_image(), dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean, std = torch.tensor(IMAGENET_DEFAULT_MEAN)[:, None, None], torch.tensor(IMAGENET_DEFAULT_STD)[:, None, None]
    image = ((pixels - mean) / std).unsqueeze(0)  # [1, 3, 224, 308]: any size works (cropped to multiples of 14)
    with torch.inference_mode():
        features = model.forward_features(image)
        layers = model.get_intermediate_layers(image, n=4, reshape=True, return_class_token=True)
    print(f"input image           {tuple(image.shape)}")
    print(f"cls token             {tuple(features['x_norm_clstoken'].shape)}")
    print(f"patch tokens          {tuple(features['x_norm_patchtokens'].shape)}  (16 x 22 patches of 14 px)")
    print(f"register tokens       {tuple(features['x_norm_regtokens'].shape)}")
    for i, (patch_map, cls_token) in enumerate(layers):
        print(f"block -{4 - i} patch map    {tuple(patch_map.shape)}, cls {tuple(cls_token.shape)}")


def distill_main(argv: list[str]) -> int:
    """``python -m dinov2.demo distill [--output-dir D] [--no-resume] [key=value ...]``."""
    parser = ArgumentParser(prog=f"{get_args_parser().prog} distill", description=__doc__.split("\n\n")[-1])
    add_output_dir(parser, "the SSL demo's folder (teacher, data)", default="demo_output")
    parser.add_argument("--no-resume", action="store_true", help="distil from scratch even if checkpoints exist")
    parser.add_argument("opts", nargs="*", metavar="KEY=VALUE", help="student config overrides")
    args = parser.parse_intermixed_args(argv)
    check_writable_dir(parser, args.output_dir, "--output-dir")
    results = distill_then_evaluate(str(Path(args.output_dir).resolve()), args.opts, resume=not args.no_resume)
    print(format_distill_results(results))
    return 0


def get_args_parser() -> argparse.ArgumentParser:
    """``[--output-dir D] [--no-resume] [key=value ...]`` (``features`` and ``distill`` are separate modes, see
    :func:`main`)."""
    parser = ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="'features [--registers]' as the first argument prints the features of a random ViT-S/14 instead; "
        "'distill [--output-dir D] [key=value ...]' distils the demo's teacher into a smaller student; "
        "'dinov3 [--output-dir D] [key=value ...]' trains a small RoPE ViT the DINOv3 way (SSL, Gram, high-res).",
    )
    add_output_dir(parser, "data, checkpoints, exports and logs", default="demo_output")
    parser.add_argument("--no-resume", action="store_true", help="train from scratch even if checkpoints exist")
    parser.add_argument(
        "opts", nargs="*", metavar="KEY=VALUE", help="overrides of the training config (configs/train/demo_cpu.yaml)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """``dinov2-demo`` / ``python -m dinov2.demo``: parse ``argv`` (default ``sys.argv``), run; returns 0.

    A bad override is a usage error (exit code 2) before anything is generated or trained.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["distill"]:
        return distill_main(argv[1:])
    if argv[:1] == ["dinov3"]:  # the DINOv3 recipe: SSL, Gram anchoring, high resolution (dinov2/demo_dinov3.py)
        from dinov2.demo_dinov3 import main as dinov3_main

        return dinov3_main(argv[1:])
    if argv[:1] == ["features"]:
        parser = ArgumentParser(prog=f"{get_args_parser().prog} features", description=features_demo.__doc__)
        parser.add_argument("--registers", action="store_true", help="use the ViT-S/14 variant with 4 registers")
        features_demo(parser.parse_args(argv[1:]).registers)
        return 0
    parser = get_args_parser()
    args = parser.parse_intermixed_args(argv)
    output_dir = str(Path(args.output_dir).resolve())
    with usage_errors(parser, ConfigKeyError, ConfigValueError):
        load_cfg(config_path("train/demo_cpu"), args.opts, output_dir)
    check_writable_dir(parser, output_dir, "--output-dir")  # after the overrides: a typo makes no folder
    results = train_then_evaluate(output_dir, args.opts, resume=not args.no_resume)
    print(format_results(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
