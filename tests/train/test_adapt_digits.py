"""The digits experiment at test size (``dinov2/train/adapt_digits.py``): a small ViT self-supervised on the digits
0-4 plays the released model, then is adapted on the digits 5-9 with the CPU preset's recipe
(``configs/train/adapt_demo_cpu.yaml``). The full-size comparison with the from-scratch settings is
``scripts/adaptation_ablation.py`` (README: "Adapt a released model to your data")."""

from __future__ import annotations

import pytest

from dinov2.train.adapt_digits import (
    GUARD_OPTS,
    RELEASED_OPTS,
    Scale,
    knn_top1,
    registered_digits_arch,
    train_run,
    write_digits,
)
from tests.conftest import preserved_logging

# 16 px digits, 4 px patches, 150 pretraining and 240 adaptation iterations (~90 s on 2 shared cores)
SCALE = Scale(image_size=16, local_size=8, patch_size=4, pretrain_iterations=150, adapt_iterations=240)
# Stated margins, percentage points of k-NN top-1 (k=10, held-out digits): the new digits gain at least NEW_GAIN,
# the old ones lose at most OLD_LOSS. Measured at this size from a weak start (the released model: old 54.8, new
# 50.8; random init 48.1 / 51.1), adaptation seeds 0, 1, 2: old +2.4, +2.9, +2.1; new +4.7, +5.0, +4.7. From a
# stronger start (200 pretraining iterations: 62.8 / 58.7) 300 adaptation iterations gave new +2.9 to +4.5, 120 gave
# -0.3; from a saturated one (README table) no setting moves either half by more than ~1.8 points. Sensitivity (README,
# "What it shows"): from a 32 px, 300-iteration start the from-scratch settings lose 3.7-14.7 points on the old digits
# (seeds 0-2, beyond OLD_LOSS) where the recipe keeps them within 0.8; from this test's weak start they gain instead.
NEW_GAIN, OLD_LOSS = 2.5, 3.0


@pytest.mark.slow
def test_adapting_on_new_digits_gains_on_them_and_keeps_the_old_ones(tmp_path):
    root = write_digits(tmp_path / "digits", size=SCALE.image_size)
    quarter = SCALE.adapt_iterations // 4
    with registered_digits_arch(), preserved_logging():
        opts = [*SCALE.opts(SCALE.pretrain_iterations), f"optim.base_lr={SCALE.base_lr}", *RELEASED_OPTS]
        released = train_run(
            tmp_path / "released", "train/demo_cpu", [*opts, f"train.dataset_path=ImageFolder:root={root}/old/train"]
        )
        opts = [*SCALE.opts(SCALE.adapt_iterations), f"optim.base_lr={SCALE.base_lr / 4}"]
        opts += [f"adapt.head_warmup_iterations={quarter}", f"adapt.backbone_lr_ramp_iterations={quarter}"]
        opts += [f"student.pretrained_weights={released}", f"train.dataset_path=ImageFolder:root={root}/new/train"]
        opts += GUARD_OPTS  # the toy's DINO term sits at uniform targets (issue 26): no entropy check
        adapted = train_run(tmp_path / "adapted", "train/adapt_demo_cpu", opts)
        scores = {
            (name, half): knn_top1(weights, tmp_path / name / "config.yaml", root, half, SCALE.image_size)
            for name, weights in (("released", released), ("adapted", adapted))
            for half in ("old", "new")
        }
    assert scores["adapted", "new"] >= scores["released", "new"] + NEW_GAIN, scores
    assert scores["adapted", "old"] >= scores["released", "old"] - OLD_LOSS, scores
