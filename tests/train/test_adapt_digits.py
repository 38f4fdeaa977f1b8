"""The digits experiment at test size (``dinov2/train/adapt_digits.py``): a small ViT self-supervised on the digits
0-4 plays the released model, then is adapted on the digits 5-9 with the CPU preset's recipe
(``configs/train/adapt_demo_cpu.yaml``). The full-size comparison with the from-scratch settings is
``scripts/adaptation_ablation.py`` (README: "Adapt a released model to your data")."""

from __future__ import annotations

import pytest

from dinov2.train.adapt_digits import Scale, knn_top1, registered_digits_arch, train_run, write_digits
from tests.conftest import preserved_logging

# 16 px digits, 4 px patches, 200 pretraining and 120 adaptation iterations (50-100 s on 2 shared cores)
SCALE = Scale(image_size=16, local_size=8, patch_size=4, pretrain_iterations=200, adapt_iterations=120)
# Stated margins, percentage points of k-NN top-1 (k=10, held-out digits). Measured at this size: old +1.3, new -0.3
# (the released model: old 62.8, new 58.7; random init 48.1 / 51.1). At this size the toy model is too weak for
# the adaptation to gain on the new digits (it does at the ablation's size); the test guards against losing them.
NEW_LOSS, OLD_LOSS = 2.0, 3.0


@pytest.mark.slow
def test_adapting_on_new_digits_loses_neither_old_nor_new_ones(tmp_path):
    root = write_digits(tmp_path / "digits", size=SCALE.image_size)
    quarter = SCALE.adapt_iterations // 4
    with registered_digits_arch(), preserved_logging():
        opts = [*SCALE.opts(SCALE.pretrain_iterations), f"optim.base_lr={SCALE.base_lr}"]
        released = train_run(
            tmp_path / "released", "train/demo_cpu", [*opts, f"train.dataset_path=ImageFolder:root={root}/old/train"]
        )
        opts = [*SCALE.opts(SCALE.adapt_iterations), f"optim.base_lr={SCALE.base_lr / 4}"]
        opts += [f"adapt.head_warmup_iterations={quarter}", f"adapt.backbone_lr_ramp_iterations={quarter}"]
        opts += [f"student.pretrained_weights={released}", f"train.dataset_path=ImageFolder:root={root}/new/train"]
        adapted = train_run(tmp_path / "adapted", "train/adapt_demo_cpu", opts)
        scores = {
            (name, half): knn_top1(weights, tmp_path / name / "config.yaml", root, half, SCALE.image_size)
            for name, weights in (("released", released), ("adapted", adapted))
            for half in ("old", "new")
        }
    assert scores["adapted", "new"] >= scores["released", "new"] - NEW_LOSS, scores
    assert scores["adapted", "old"] >= scores["released", "old"] - OLD_LOSS, scores
