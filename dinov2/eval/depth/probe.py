"""Linear (1 or 4 blocks, depth bins) and DPT depth probes on a frozen backbone (the released NYU / KITTI recipes).

    python -m dinov2.eval.depth --config-file dinov2/configs/eval/vits14_pretrain.yaml \\
        --pretrained-weights dinov2_vits14_pretrain.pth --output-dir out/nyu_linear4 \\
        --train-dataset NYU:root=/data/nyu:split=TRAIN --val-dataset NYU:root=/data/nyu:split=TEST \\
        [--recipe linear1|linear4|dpt] [key=value ...]

The head trains with the SILog loss (+ the gradient loss) on augmented crops; evaluation predicts every
validation image at full size (with flip averaging), clamps to the depth range and reports a1/a2/a3, abs_rel,
sq_rel, rmse, rmse_log, log_10 and silog over the valid pixels (Eigen crop for NYU). Outputs in
``--output-dir``: ``probe_config.yaml``, ``probe_checkpoint.pth`` (resume), ``training_metrics.json``,
``results_eval_depth.json``, ``results_eval_depth_detailed.json`` and the head in the released format,
``depth_<linear|linear4|dpt>_head.pth``, which loads with ``dinov2.hub.depthers.dinov2_vit*14_ld`` /
``_dd`` (``weights=``; the depth range comes with the file).
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from dinov2.data.dense_transforms import make_dense_eval_transform, make_depth_train_transform
from dinov2.eval.dense import probe as dense_probe
from dinov2.eval.depth.losses import gradient_loss, sigloss
from dinov2.eval.depth.metrics import DepthMetric
from dinov2.heads.depth.dpt import DPTHead
from dinov2.heads.depth.linear import LinearDepthHead
from dinov2.heads.depth.model import DepthEncoderDecoder
from dinov2.heads.encoder_decoder import tapped_widths
from dinov2.heads.sliding_window import as_pairs

logger = logging.getLogger("dinov2")

TASK = "depth"
CONFIG_DIR = dense_probe.recipe_dir(TASK)


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors before any work or submission: config, weights, datasets, then the recipe and its overrides."""
    dense_probe.check_probe_args(parser, args, CONFIG_DIR)


# The hub depthers' 4 blocks by backbone depth (ViT-S/B, ViT-L, ViT-g).
HUB_OUT_INDEX = {12: [2, 5, 8, 11], 24: [4, 11, 17, 23], 40: [9, 19, 29, 39]}


def get_args_parser(description=None, parents=None, add_help: bool = True) -> argparse.ArgumentParser:
    return dense_probe.get_dense_args_parser(description or "DINOv2 depth probe", "linear4", parents, add_help)


def out_index_for(depth: int, n_blocks: int) -> list[int]:
    """The last block for 1; for 4 the hub's blocks, or evenly spaced ones ending at the last block."""
    if n_blocks == 1:
        return [depth - 1]
    if n_blocks == 4 and depth in HUB_OUT_INDEX:
        return list(HUB_OUT_INDEX[depth])
    return [round(depth * (k + 1) / n_blocks) - 1 for k in range(n_blocks)]


def build_depther(backbone, head_cfg) -> DepthEncoderDecoder:
    """Frozen ``backbone`` + a fresh depth head described by ``head_cfg`` (see ``configs/defaults.yaml``)."""
    out_index = list(head_cfg.out_index) if head_cfg.out_index else out_index_for(backbone.n_blocks, head_cfg.n_blocks)
    widths = set(tapped_widths(backbone, out_index))
    if widths != {backbone.embed_dim}:  # a ConvNeXt's stages: the depth heads take one width
        raise ValueError(
            f"the depth heads take taps of one width; blocks {out_index} of this backbone have widths "
            f"{sorted(widths)}: tap its last stage only (recipe linear1, or head.out_index=[3])"
        )
    if head_cfg.type == "linear":
        head = LinearDepthHead(backbone.embed_dim, len(out_index), n_bins=head_cfg.n_bins,
                               min_depth=head_cfg.min_depth, max_depth=head_cfg.max_depth)  # fmt: skip
    elif head_cfg.type == "dpt":
        if len(out_index) != 4:
            raise ValueError(f"the DPT head taps 4 blocks, got head.out_index={out_index}")
        head = DPTHead(backbone.embed_dim, channels=head_cfg.channels, min_depth=head_cfg.min_depth,
                       max_depth=head_cfg.max_depth)  # fmt: skip
        start_alive(head)
    else:
        raise ValueError(f"head.type must be linear or dpt, got {head_cfg.type!r}")
    return DepthEncoderDecoder(backbone, head, out_index)


# Bias of the DPT head's last conv at the start of training (metres, before the ReLU): see start_alive.
DPT_START_BIAS = 1.0


def start_alive(head: DPTHead) -> None:
    """Start a fresh DPT head with its output above the ReLU everywhere (last conv bias :data:`DPT_START_BIAS`).

    The head outputs ``relu(conv(x)) + min_depth``; with PyTorch's default init the last bias is drawn around 0,
    and when it is negative (about one start in four with 256 channels, most starts with narrow heads) every
    output is clamped: the prediction is ``min_depth`` everywhere, no gradient flows and the probe never trains.
    Deliberate deviation from the release's random bias (loading a head file is not affected).
    """
    with torch.no_grad():
        head.conv_depth.head[-1].bias.fill_(DPT_START_BIAS)


def head_file_name(head_cfg) -> str:
    if head_cfg.type == "dpt":
        return "depth_dpt_head.pth"
    return "depth_linear4_head.pth" if head_cfg.n_blocks == 4 else "depth_linear_head.pth"


def depth_loss(pred: torch.Tensor, gt: torch.Tensor, iteration: int, loss_cfg) -> tuple[torch.Tensor, dict]:
    """Released loss: SILog (warm-up for the first iterations) + weighted gradient loss, on the prediction resized
    (bilinear) to the ground truth ``[B, 1, H, W]``."""
    pred = F.interpolate(pred, size=gt.shape[-2:], mode="bilinear", align_corners=False)
    silog = loss_cfg.sigloss_weight * sigloss(pred, gt, warm_up=iteration < loss_cfg.sigloss_warmup_iters)
    if not loss_cfg.gradient_weight:
        return silog, {"loss_depth": silog.item()}
    grad = loss_cfg.gradient_weight * gradient_loss(pred, gt, loss_cfg.gradient_mode)
    return silog + grad, {"loss_depth": silog.item(), "loss_grad": grad.item()}


def predict_depth(model: DepthEncoderDecoder, image: torch.Tensor, flip: bool) -> torch.Tensor:
    """Full-size prediction ``[B, 1, H, W]`` (float32), averaged with the flipped image's when ``flip``."""
    pred = model.whole_inference(image, img_meta=None, rescale=True).float()
    if flip:
        pred = (pred + model.whole_inference(image.flip(-1), None, True).float().flip(-1)) / 2
    return pred


def _datasets(args, cfg):
    t = cfg.train
    train_transform = make_depth_train_transform(
        crop_size=as_pairs(t.crop_size), nyu_crop=t.nyu_crop, rotate_prob=t.rotate_prob,
        rotate_degree=t.rotate_degree, flip_prob=t.flip_prob, color_prob=t.color_prob,
        gamma_range=tuple(t.gamma_range), brightness_range=tuple(t.brightness_range), color_range=tuple(t.color_range),
    )  # fmt: skip
    eval_transform = make_dense_eval_transform("depth")
    return dense_probe.make_datasets(
        args, train_transform, eval_transform, "depth", "NYU, DepthFolder, SyntheticDense:task=depth", None
    )


def main(args: argparse.Namespace, probe: dense_probe.ProbeSetup | None = None) -> dict:
    """Train and evaluate the probe of ``args``; ``probe``: a set-up around a backbone already built
    (:func:`dense_probe.probe_on_backbone`) instead of the one of ``--config-file`` / ``--pretrained-weights``."""
    probe = probe or dense_probe.setup_probe(args, TASK)
    cfg, device, autocast = probe.cfg, probe.device, probe.autocast
    train_set, val_set = _datasets(args, cfg)
    model = build_depther(probe.backbone, cfg.head)

    def step_loss(head, batch, iteration):
        images, gt = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)[:, None]
        with torch.no_grad(), autocast():
            features = model.extract_feat(images)
        pred = head([(patch.float(), cls.float()) for patch, cls in features])
        return depth_loss(pred, gt, iteration, cfg.loss)

    def run_evaluation(iteration: int) -> dict:
        metric = DepthMetric(cfg.test.min_depth, cfg.test.max_depth, cfg.test.crop)
        predict = functools.partial(predict_depth, model, flip=cfg.test.flip)
        results = dense_probe.evaluate(probe, model, predict, val_set, metric)
        logger.info("iteration %d: %s", iteration, "  ".join(f"{k} {v:.4f}" for k, v in results.items()))
        return results

    dense_probe.run_training(probe, model.decode_head, train_set, step_loss, run_evaluation, args.no_resume)
    results = run_evaluation(cfg.train.iterations)
    head_path = probe.output_dir / head_file_name(cfg.head)
    meta = {"head": cfg.head.type, "out_index": list(model.out_index), "iterations": int(cfg.train.iterations),
            "depth_range": [float(cfg.head.min_depth), float(cfg.head.max_depth)]}  # fmt: skip
    size = ("channels", cfg.head.channels) if cfg.head.type == "dpt" else ("n_bins", cfg.head.n_bins)
    meta[size[0]] = int(size[1])  # the hub depthers build the head of this size
    dense_probe.save_head(model.decode_head, head_path, meta)
    return dense_probe.write_results(probe, args, results, {"head": str(head_path)}, head_path.stem, ".4f")


def cli_main(argv: Sequence[str] | None = None) -> int:
    """``dinov2-eval-depth`` / ``python -m dinov2.eval.depth``: see :func:`dense_probe.run_cli`."""
    return dense_probe.run_cli(get_args_parser(), main, CONFIG_DIR, argv)


if __name__ == "__main__":
    sys.exit(cli_main())
