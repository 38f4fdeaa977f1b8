"""The digits experiment at test size (``dinov2/train/adapt_digits.py``): a small ViT self-supervised on the digits
0-4 plays the released model, then is adapted on the digits 5-9 with the CPU preset's recipe
(``configs/train/adapt_demo_cpu.yaml``), and, from a stronger start, also with the from-scratch CPU recipe, to show
that the test's margin on the old digits is one the from-scratch settings break. The full-size comparisons are
``scripts/adaptation_ablation.py`` (README: "Adapt a released model to your data")."""

from __future__ import annotations

from pathlib import Path

import pytest

from dinov2.train.adapt_digits import (
    SCRATCH,
    Scale,
    adapt_opts,
    knn_top1,
    pretrain_opts,
    registered_digits_arch,
    run_folder,
    train_run,
    write_digits,
)
from tests.conftest import preserved_logging, torch_threads

# 16 px digits, 4 px patches, 150 pretraining and 240 adaptation iterations (~60 s on 2 cores)
SCALE = Scale(image_size=16, local_size=8, patch_size=4, pretrain_iterations=150, adapt_iterations=240)
# Stated margins, percentage points of k-NN top-1 (k=10, held-out digits): the new digits gain at least NEW_GAIN,
# the old ones lose at most OLD_LOSS. Measured at this size from a weak start (the released model: old 54.8, new
# 50.8; random init 48.1 / 51.1), adaptation seeds 0, 1, 2: old +2.4, +2.9, +2.1; new +4.7, +5.0, +4.7. From a
# saturated start (README table) no setting moves either half by more than ~1.8 points.
NEW_GAIN, OLD_LOSS = 2.5, 3.0
# The sensitivity check: from a stronger start (300 pretraining iterations: old 71.9, new 66.3) 300 adaptation
# iterations with the from-scratch CPU recipe (``configs/train/demo_cpu.yaml``: no head warm-up, 4x the lr, its own
# confident teacher) cost the old digits more than OLD_LOSS where the recipe keeps them and still gains on the new
# ones (README, "What it shows"; seeds 0, 1, 2: recipe old +0.8, +1.6, +0.3, new +1.1, +2.1, +2.6; from scratch old
# -7.0, -4.0, -9.9). From the weak start above the from-scratch recipe gains instead: more training helps an
# undertrained backbone. All figures are with 2 intra-op threads, the count the runs are pinned to
# (``tests.conftest.MEASURED_THREADS``): with 1 thread the from-scratch recipe's seed 0 ends +0.8 on the old digits
# (recipe -2.1 / +1.8, start 73.0 / 67.6), where 2 threads give -7.0.
STRONG = Scale(image_size=16, local_size=8, patch_size=4, pretrain_iterations=300, adapt_iterations=300)
STRONG_NEW_GAIN = 0.5


def released_and_adapted(tmp_path: Path, scale: Scale, settings: dict[str, list[str]]) -> dict[tuple[str, str], float]:
    """Pretrain "the released model" at ``scale``, adapt it with each setting (name -> extra overrides), and score
    every backbone: {(run, half): k-NN top-1}."""
    root = write_digits(tmp_path / "digits", size=scale.image_size)
    runs = {name: tmp_path / run_folder(name) for name in ["released", *settings]}
    with registered_digits_arch(), preserved_logging(), torch_threads():
        exports = {"released": train_run(runs["released"], SCRATCH, pretrain_opts(scale, root))}
        for setting, extra in settings.items():
            config, opts = adapt_opts(setting, exports["released"], root, scale)
            exports[setting] = train_run(runs[setting], config, [*opts, *extra])
        return {
            (name, half): knn_top1(weights, runs[name] / "config.yaml", root, half, scale.image_size)
            for name, weights in exports.items()
            for half in ("old", "new")
        }


@pytest.mark.slow
def test_adapting_on_new_digits_gains_on_them_and_keeps_the_old_ones(tmp_path):
    quarter = SCALE.adapt_iterations // 4
    warmup = [f"adapt.head_warmup_iterations={quarter}", f"adapt.backbone_lr_ramp_iterations={quarter}"]
    scores = released_and_adapted(tmp_path, SCALE, {"recipe": warmup})
    assert scores["recipe", "new"] >= scores["released", "new"] + NEW_GAIN, scores
    assert scores["recipe", "old"] >= scores["released", "old"] - OLD_LOSS, scores


@pytest.mark.slow
def test_the_from_scratch_recipe_breaks_the_old_digits_margin_the_recipe_keeps(tmp_path):
    """dinov2#204 in small: fresh heads on a trained backbone, adapted without warm-up at the from-scratch lr, lose
    what the backbone knew; the recipe from the same start does not, and gains on the new digits."""
    scores = released_and_adapted(tmp_path, STRONG, {"recipe": [], "scratch, demo teacher": []})
    assert scores["recipe", "old"] >= scores["released", "old"] - OLD_LOSS, scores
    assert scores["recipe", "new"] >= scores["released", "new"] + STRONG_NEW_GAIN, scores
    assert scores["scratch, demo teacher", "old"] < scores["released", "old"] - OLD_LOSS, scores
