"""How much image-specific signal a run's DINO head gives its teacher targets (README, "The CPU demo").

For each teacher export of a training run (``<run>/eval/*/teacher_checkpoint.pth``), on ``--images`` images with the
run's own multi-crop augmentation (two global crops and one local crop each), it prints:

- ``sigma``: standard deviation of the centred prototype logits (the image-specific part; cosine units for DINOv2's
  weight-normalised prototypes, cosines times the prototype norms for DINOv3's plain prototype layer). Targets
  ``softmax((l - c) / T)`` then have entropy about ``1 - (sigma / T)^2 / (2 ln K)`` of uniform (``H_pred``);
- ``rho_gg`` / ``rho_lg``: correlation of an image's centred logits across two global views / a local and a global
  view (``rho_other``: between different images). Sharpening can grow ``sigma`` only when ``rho`` exceeds
  ``T_teacher / T_student``;
- ``cos_cls`` / ``cos_head``: mean cosine between different images' class tokens and DINO-head bottleneck outputs;
- ``proto_norm``: mean norm of the prototypes (the last layer's rows), the bound on a logit (the bottleneck output
  is normalised): ~1 for DINOv2's weight-normalised layer, 0.02 x sqrt(bottleneck dim) at init for DINOv3's.

With ``--temperatures T ...`` it prints instead, for the last export, the targets its head gives one batch (two
global crops of each image) at each teacher temperature, with softmax centring and with Sinkhorn-Knopp: their mean
entropy (x ln K) and the share of the prototypes the batch uses (README, Distillation: why the distillation demo
uses its teacher's own centring).

    python scripts/dino_head_spread.py demo_output --images demo_output/data/val
    python scripts/dino_head_spread.py demo_output --images demo_output/data/train --count 64 --temperatures 0.04 0.07
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from dinov2.data.augmentations import DataAugmentationDINO
from dinov2.data.datasets import ImageFolder
from dinov2.features import load_backbone
from dinov2.loss import DINOLoss
from dinov2.models.weights import read_checkpoint, read_parts
from dinov2.train.collapse_guard import entropy
from dinov2.train.heads import heads_for
from dinov2.utils.config import load_cfg

STUDENT_TEMP = 0.1  # DINOLoss's student temperature (released, fixed)


def _mean_offdiagonal_cosine(x: torch.Tensor) -> float:
    z = F.normalize(x, dim=-1)
    cos, n = z @ z.T, z.shape[0]
    return float((cos.sum() - cos.diagonal().sum()) / (n * n - n))


def _correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a - a.mean(0), b - b.mean(0)
    return float((a * b).sum() / (a.norm() * b.norm()))


def views(run: Path, images: Path, count: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Two global crops and one local crop of the first ``count`` images, with the run's augmentation."""
    crops = load_cfg(run / "config.yaml").crops
    augment = DataAugmentationDINO(
        crops.global_crops_scale, crops.local_crops_scale, 1, crops.global_crops_size, crops.local_crops_size
    )
    dataset = ImageFolder(root=str(images))
    torch.manual_seed(seed)
    out = [augment(dataset[i][0]) for i in range(min(count, len(dataset)))]
    return {
        "g1": torch.stack([o["global_crops"][0] for o in out]),
        "g2": torch.stack([o["global_crops"][1] for o in out]),
        "local": torch.stack([o["local_crops"][0] for o in out]),
    }


def _teacher(run: Path, export: Path) -> tuple:
    """``(config, backbone, DINO head)`` of a teacher export, the file read once for both."""
    cfg = load_cfg(run / "config.yaml")
    checkpoint = read_checkpoint(export)
    backbone = load_backbone(config=cfg, weights=checkpoint, validate=False).model
    head = heads_for(cfg).build(backbone.embed_dim)["dino_head"].eval()
    parts = read_parts(checkpoint)
    head.load_state_dict({k.removeprefix("dino_head."): v for k, v in parts.items() if k.startswith("dino_head.")})
    return cfg, backbone, head


@torch.no_grad()
def measure(run: Path, export: Path, crops: dict[str, torch.Tensor]) -> dict[str, float]:
    """The signals of one export (see the module docstring)."""
    cfg, backbone, head = _teacher(run, export)
    cls = {name: backbone.forward_features(x)["x_norm_clstoken"] for name, x in crops.items()}
    bottleneck = head.mlp(cls["g1"])
    logits = {name: head(c) for name, c in cls.items()}
    prototypes = head.last_layer(torch.eye(bottleneck.shape[-1])).T  # [K, bottleneck]: the effective prototype rows
    centred = logits["g1"] - logits["g1"].mean(0)
    sigma = float(centred.std())
    temp = float(cfg.teacher.teacher_temp)
    k = logits["g1"].shape[-1]
    return {
        "sigma": sigma,
        "H_pred": max(0.0, 1 - (sigma / temp) ** 2 / (2 * math.log(k))),
        "rho_gg": _correlation(logits["g1"], logits["g2"]),
        "rho_lg": _correlation(logits["local"], logits["g1"]),
        "rho_other": _correlation(logits["g1"], logits["g2"].roll(1, 0)),
        "threshold": temp / STUDENT_TEMP,
        "cos_cls": _mean_offdiagonal_cosine(cls["g1"]),
        "cos_head": _mean_offdiagonal_cosine(bottleneck),
        "proto_norm": float(prototypes.norm(dim=-1).mean()),
    }


@torch.no_grad()
def targets(
    run: Path, export: Path, crops: dict[str, torch.Tensor], temperatures: list[float]
) -> dict[float, dict[str, float]]:
    """The teacher targets of the two global crops of every image (one batch) at each temperature, with softmax
    centring (the batch mean as the centre) and with Sinkhorn-Knopp (DINOLoss's, 3 iterations): the mean entropy of
    an image's targets (x ln K) and the prototypes the batch uses (perplexity of the mean target / K)."""
    _, backbone, head = _teacher(run, export)
    logits = torch.cat([head(backbone.forward_features(crops[name])["x_norm_clstoken"]) for name in ("g1", "g2")])
    k = logits.shape[-1]
    rows = {}
    for temperature in temperatures:
        made = {
            "centring": torch.softmax((logits - logits.mean(0)) / temperature, dim=-1),
            "sinkhorn_knopp": DINOLoss(k).sinkhorn_knopp_teacher(logits, temperature),
        }
        rows[temperature] = {}
        for name, q in made.items():
            rows[temperature][f"H_{name}"] = float(entropy(q).mean()) / math.log(k)
            rows[temperature][f"used_{name}"] = float(entropy(q.mean(0)).exp()) / k
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="training output folder (config.yaml, eval/*/teacher_checkpoint.pth)")
    parser.add_argument("--images", type=Path, required=True, help="image folder (class sub-folders)")
    parser.add_argument("--count", type=int, default=200, help="images used")
    parser.add_argument(
        "--temperatures",
        type=float,
        nargs="+",
        help="instead: the last export's targets at these teacher temperatures, softmax centring vs Sinkhorn-Knopp",
    )
    args = parser.parse_args(argv)
    exports = sorted(args.run.glob("eval/*/teacher_checkpoint.pth"), key=lambda p: int(p.parent.name.split("_")[-1]))
    if not exports:
        parser.error(f"{args.run}/eval holds no teacher_checkpoint.pth: train first (python -m dinov2.demo)")
    crops = views(args.run, args.images, args.count)
    if args.temperatures:
        names = ["H_centring", "used_centring", "H_sinkhorn_knopp", "used_sinkhorn_knopp"]
        print(f"{exports[-1].parent.name}: targets of {len(crops['g1'])} images x 2 global crops")
        print(f"{'temperature':<12}" + "".join(f"{n:>20}" for n in names))
        for temperature, row in targets(args.run, exports[-1], crops, args.temperatures).items():
            print(f"{temperature:<12}" + "".join(f"{row[n]:>20.3f}" for n in names))
        return 0
    names = ["sigma", "H_pred", "rho_gg", "rho_lg", "rho_other", "threshold", "cos_cls", "cos_head", "proto_norm"]
    print(f"{'export':<16}" + "".join(f"{n:>11}" for n in names))
    for export in exports:
        row = measure(args.run, export, crops)
        print(f"{export.parent.name:<16}" + "".join(f"{row[n]:>11.3f}" for n in names))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
