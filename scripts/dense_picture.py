"""The README picture of dense prediction: synthetic scenes with the predictions of a linear segmentation probe and
a linear depth probe trained on them (frozen backbone), written as one PNG.

Rows are validation scenes; columns: image, predicted classes over the image, predicted depth, true depth
(near = bright). The probes run through their command-line entry points (``dinov2.eval.segmentation`` /
``dinov2.eval.depth``) with demo-sized recipes; the backbone is ``--config-file`` / ``--pretrained-weights``
(default: a randomly initialised ViT-S/14, written to the output folder).

    PYTHONPATH=. python scripts/dense_picture.py --output-dir dense_demo          # -> dense_demo/dense.png
    PYTHONPATH=. python scripts/dense_picture.py --config-file dinov2/configs/eval/vits14_pretrain.yaml \\
        --pretrained-weights dinov2_vits14_pretrain.pth --output-dir dense_demo
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dinov2 import distributed
from dinov2.data.datasets import SyntheticDense
from dinov2.data.dense_transforms import make_dense_eval_transform
from dinov2.eval.dense.probe import load_recipe
from dinov2.eval.depth import probe as depth_probe
from dinov2.eval.segmentation import probe as segmentation_probe
from dinov2.eval.setup import build_model_for_eval
from dinov2.heads.segmentation.classes import voc_palette
from dinov2.heads.segmentation.render import overlay_segmentation
from dinov2.hub.backbones import dinov2_vits14
from dinov2.utils.config import load_cfg

SCENES = "num_classes=4:images=96:val_images=8:size=160x120"
COMMON = ["train.batch_size=4", "train.num_workers=0", "eval.num_workers=0", "optim.warmup_iters=20", "log.period=50"]
SEGMENTATION = ["train.iterations=300", "optim.lr=0.01", "train.crop_size=[112,112]", "train.short_side=120",
                "test.crop_size=[112,112]", "test.stride=[56,56]", "test.short_side=120"]  # fmt: skip
DEPTH = ["train.iterations=300", "optim.lr=0.03", "train.crop_size=[112,154]", "train.nyu_crop=false",
         "test.crop=null", "loss.gradient_mode=spatial", "loss.sigloss_warmup_iters=0"]  # fmt: skip
_RAMP = np.array([[0, 0, 4], [80, 18, 123], [183, 55, 121], [252, 137, 97], [252, 253, 191]], dtype=np.float32)


def colorize_depth(depth: np.ndarray, near: float, far: float) -> Image.Image:
    """Depth ``[H, W]`` -> RGB, near bright and far dark (a magma-like ramp between ``near`` and ``far``)."""
    t = np.clip((far - depth) / (far - near), 0, 1) * (len(_RAMP) - 1)
    low = np.floor(t).astype(int).clip(0, len(_RAMP) - 2)
    colours = _RAMP[low] + (t - low)[..., None] * (_RAMP[low + 1] - _RAMP[low])
    return Image.fromarray(colours.round().astype(np.uint8))


def _run(probe, argv: list[str]) -> None:
    probe.main(probe.get_args_parser().parse_args(argv))
    distributed.disable()


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="dense_demo")
    parser.add_argument("--config-file", default="dinov2/configs/eval/vits14_pretrain.yaml")
    parser.add_argument("--pretrained-weights", default=None, help="default: a random ViT-S/14 (seeded)")
    parser.add_argument("--rows", type=int, default=3)
    args = parser.parse_args(argv)
    out = Path(args.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    weights = args.pretrained_weights
    if weights is None:
        torch.manual_seed(0)
        weights = str(out / "random_vits14.pth")
        torch.save(dinov2_vits14(pretrained=False).state_dict(), weights)
    scenes = f"SyntheticDense:root={out / 'scenes'}:{SCENES}"
    base = ["--config-file", args.config_file, "--pretrained-weights", weights]
    for probe, task, recipe, extra in ((segmentation_probe, "segmentation", "linear", SEGMENTATION),
                                       (depth_probe, "depth", "linear4", DEPTH)):  # fmt: skip
        data = ["--train-dataset", f"{scenes}:task={task}", "--val-dataset", f"{scenes}:task={task}:split=VAL"]
        _run(probe, [*base, "--output-dir", str(out / task), *data, "--recipe", recipe, *COMMON, *extra])

    backbone = build_model_for_eval(load_cfg(args.config_file), weights, device=torch.device("cpu"))
    seg_cfg = load_recipe(segmentation_probe.CONFIG_DIR, "linear", SEGMENTATION)
    segmentor = segmentation_probe.build_segmentor(backbone, seg_cfg, 5)
    depth_cfg = load_recipe(depth_probe.CONFIG_DIR, "linear4", DEPTH)
    depther = depth_probe.build_depther(backbone, depth_cfg.head)
    for model, path in ((segmentor, out / "segmentation" / "segmentation_linear_head.pth"),
                        (depther, out / "depth" / "depth_linear4_head.pth")):  # fmt: skip
        state = torch.load(path, weights_only=True)["state_dict"]
        model.decode_head.load_state_dict({k.removeprefix("decode_head."): v for k, v in state.items()})
        model.eval()
    keys = dict(root=str(out / "scenes"), num_classes=4, images=96, val_images=8, size=(160, 120), split="VAL")
    images, depths = SyntheticDense(task="segmentation", **keys), SyntheticDense(task="depth", **keys)
    tiles = []
    with torch.no_grad():
        for index in range(args.rows):
            image, _ = images[index]
            tensor = make_dense_eval_transform("segmentation")(image, np.zeros((1, 1)))[0][None]
            classes = segmentor.predict(tensor)[0]
            depth = depther(tensor)[0, 0].numpy()
            true_depth = depths[index][1]
            row = [image, overlay_segmentation(image, classes, voc_palette(5), alpha=0.6),
                   colorize_depth(depth, 1.0, 8.0), colorize_depth(true_depth, 1.0, 8.0)]  # fmt: skip
            tiles.append(row)
    width, height = tiles[0][0].size
    canvas = Image.new("RGB", (4 * width + 3 * 4, len(tiles) * height + (len(tiles) - 1) * 4), (255, 255, 255))
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            canvas.paste(tile, (c * (width + 4), r * (height + 4)))
    path = out / "dense.png"
    canvas.save(path)
    print(f"wrote {path}: image | predicted classes | predicted depth | true depth")
    return path


if __name__ == "__main__":
    main()
