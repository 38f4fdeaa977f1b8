"""Linear / +ms semantic segmentation probe on a frozen backbone (the released mmseg recipes, without mmseg).

    python -m dinov2.eval.segmentation --config-file dinov2/configs/eval/vits14_pretrain.yaml \\
        --pretrained-weights dinov2_vits14_pretrain.pth --output-dir out/seg_ade20k_linear \\
        --train-dataset ADE20K:root=/data/ADEChallengeData2016:split=TRAIN \\
        --val-dataset ADE20K:root=/data/ADEChallengeData2016:split=VAL [--recipe ms] [key=value ...]

The head (BN + 1x1 conv on the last block, or on the last 4 blocks for ``ms``) trains with cross-entropy on
augmented crops; the evaluation runs the test pipeline of the recipe (sliding windows, scales, flips) and
reports mIoU, mAcc, aAcc and per-class IoU / accuracy. Outputs in ``--output-dir``: ``probe_config.yaml``,
``probe_checkpoint.pth`` (resume), ``training_metrics.json``, ``results_eval_segmentation.json`` (mIoU, mAcc,
aAcc in percent), ``results_eval_segmentation_detailed.json``, and the head in the released format,
``segmentation_<type>_head.pth``, which loads with ``dinov2.hub.segmentors.dinov2_vit*14_*_<type>(weights=...)``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from dinov2.data.datasets import ADE20K, VOC2012
from dinov2.data.dense_transforms import make_dense_eval_transform, make_segmentation_train_transform
from dinov2.eval.dense import probe as dense_probe
from dinov2.eval.segmentation.metrics import SegmentationMetric
from dinov2.heads.encoder_decoder import tapped_widths
from dinov2.heads.segmentation.classes import ADE20K_CLASS_NAMES, VOC2012_CLASS_NAMES
from dinov2.heads.segmentation.inference import SegmentationTestConfig
from dinov2.heads.segmentation.linear import LinearSegmentationHead
from dinov2.heads.segmentation.model import SegmentationEncoderDecoder
from dinov2.heads.sliding_window import as_pairs

logger = logging.getLogger("dinov2")

TASK = "segmentation"
CONFIG_DIR = dense_probe.recipe_dir(TASK)


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors before any work or submission: config, weights, datasets, then the recipe and its overrides."""
    dense_probe.check_probe_args(parser, args, CONFIG_DIR)


HEAD_BLOCKS = {"linear": 1, "ms": 4}


def get_args_parser(description=None, parents=None, add_help: bool = True) -> argparse.ArgumentParser:
    return dense_probe.get_dense_args_parser(
        description or "DINOv2 semantic segmentation probe", "linear", parents, add_help
    )


def class_names_for(dataset, num_classes: int) -> list[str]:
    if isinstance(dataset, ADE20K):
        return list(ADE20K_CLASS_NAMES)
    if isinstance(dataset, VOC2012):
        return list(VOC2012_CLASS_NAMES)
    return [str(i) for i in range(num_classes)]


def test_config(cfg) -> SegmentationTestConfig:
    test = cfg.test
    return SegmentationTestConfig(
        mode=test.mode, crop_size=as_pairs(test.crop_size), stride=as_pairs(test.stride),
        short_side=test.short_side, ratios=tuple(float(r) for r in test.ratios), flip=bool(test.flip),
    )  # fmt: skip


def build_segmentor(backbone, cfg, num_classes: int) -> SegmentationEncoderDecoder:
    """Frozen ``backbone`` + a fresh head of ``cfg.head.type`` (taps the last 1 or 4 blocks)."""
    if cfg.head.type not in HEAD_BLOCKS:
        raise ValueError(f"head.type must be one of {sorted(HEAD_BLOCKS)}, got {cfg.head.type!r}")
    n_blocks, depth = HEAD_BLOCKS[cfg.head.type], backbone.n_blocks
    out_index = list(range(depth - n_blocks, depth))
    head = LinearSegmentationHead(tapped_widths(backbone, out_index), num_classes)
    return SegmentationEncoderDecoder(backbone, head, out_index, test_config(cfg))


def check_labels_fit(labels: torch.Tensor, num_classes: int, ignore_index: int, dataset: str) -> None:
    """Refuse labels the head cannot predict (``>= num_classes``, other than ``ignore_index``), naming the key to set;
    cross-entropy would fail with a bare index error (on CUDA, a device-side assert)."""
    valid = labels[labels != ignore_index]
    top = int(valid.max()) if valid.numel() else -1
    if top >= num_classes:
        raise ValueError(
            f"{dataset!r} has label {top} but the head predicts {num_classes} classes (0..{num_classes - 1}); set "
            f"head.num_classes to at least {top + 1}, or head.ignore_index={top} if it marks unlabelled pixels"
        )


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int, avg_non_ignore: bool):
    """Cross-entropy of logits resized (bilinear) to the labels; mmseg's mean over all pixels by default."""
    logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    losses = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="none")  # [B, H, W], 0 ignored
    if avg_non_ignore:
        return losses.sum() / (labels != ignore_index).sum().clamp_min(1)
    return losses.mean()


def _datasets(args, cfg):
    train_transform = make_segmentation_train_transform(
        crop_size=as_pairs(cfg.train.crop_size), short_side=cfg.train.short_side,
        ratio_range=tuple(cfg.train.ratio_range), cat_max_ratio=cfg.train.cat_max_ratio,
        flip_prob=cfg.train.flip_prob, photometric=cfg.train.photometric, ignore_index=cfg.head.ignore_index,
    )  # fmt: skip
    eval_transform = make_dense_eval_transform("segmentation")
    return dense_probe.make_datasets(
        args,
        train_transform,
        eval_transform,
        "segmentation",
        "ADE20K, VOC2012, SegmentationFolder, SyntheticDense",
        "segmentation",
    )


def main(args: argparse.Namespace, probe: dense_probe.ProbeSetup | None = None) -> dict:
    """Train and evaluate the probe of ``args``; ``probe``: a set-up around a backbone already built
    (:func:`dense_probe.probe_on_backbone`) instead of the one of ``--config-file`` / ``--pretrained-weights``."""
    probe = probe or dense_probe.setup_probe(args, TASK)
    cfg, device, autocast = probe.cfg, probe.device, probe.autocast
    train_set, val_set = _datasets(args, cfg)
    known = getattr(train_set, "num_classes", None)
    num_classes = cfg.head.num_classes or known
    if not num_classes:
        raise ValueError(f"the number of classes of {args.train_dataset_str!r} is unknown: set head.num_classes=K")
    if known and num_classes < known:
        raise ValueError(
            f"head.num_classes={num_classes} but {args.train_dataset_str!r} has {known} classes (labels 0..{known - 1}"
            f"); set head.num_classes={known} or leave it unset"
        )
    model = build_segmentor(probe.backbone, cfg, int(num_classes))
    class_names = class_names_for(val_set, int(num_classes))

    def step_loss(head, batch, iteration):
        images, labels = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
        # every batch (a label outside the head may first appear late; one small reduction beside the step's own
        # loss sync), before cross-entropy would fail on it
        check_labels_fit(labels, int(num_classes), cfg.head.ignore_index, args.train_dataset_str)
        with torch.no_grad(), autocast():
            features = model.extract_feat(images)
        logits = head([f.float() for f in features])
        return segmentation_loss(logits, labels, cfg.head.ignore_index, cfg.loss.avg_non_ignore), {}

    def run_evaluation(iteration: int) -> dict:
        metric = SegmentationMetric(num_classes, cfg.head.ignore_index, class_names)
        results = dense_probe.evaluate(probe, model, model.predict, val_set, metric)
        logger.info("iteration %d: mIoU %.2f  mAcc %.2f  aAcc %.2f", iteration, 100 * results["mIoU"],
                    100 * results["mAcc"], 100 * results["aAcc"])  # fmt: skip
        return results

    dense_probe.run_training(probe, model.decode_head, train_set, step_loss, run_evaluation, args.no_resume)
    results = run_evaluation(cfg.train.iterations)
    head_path = probe.output_dir / f"segmentation_{cfg.head.type}_head.pth"
    meta = {"head": cfg.head.type, "num_classes": int(num_classes), "iterations": int(cfg.train.iterations),
            "class_names": class_names}  # fmt: skip
    dense_probe.save_head(model.decode_head, head_path, meta)
    summary = {k: 100.0 * results[k] for k in ("mIoU", "mAcc", "aAcc")}
    per_class = {k: {name: 100.0 * v for name, v in results[k].items()} for k in ("IoU", "Acc")}
    return dense_probe.write_results(probe, args, summary, {**per_class, "head": str(head_path)}, cfg.head.type, ".2f")


def cli_main(argv: Sequence[str] | None = None) -> int:
    """``dinov2-eval-segmentation`` / ``python -m dinov2.eval.segmentation``: see :func:`dense_probe.run_cli`."""
    return dense_probe.run_cli(get_args_parser(), main, CONFIG_DIR, argv)


if __name__ == "__main__":
    sys.exit(cli_main())
