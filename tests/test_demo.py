"""The README's main job: the CPU demo trains, exports and evaluates (the CI learning test)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dinov2.demo import format_results, train_then_evaluate
from tests.conftest import REPO_ROOT


@pytest.mark.slow
def test_reduced_demo_learns(tmp_path):
    """A third of the demo (100 iterations, ~2 minutes on 2 cores): the trained teacher's k-NN top-1 on held-out
    images beats the randomly initialised backbone by at least 10 points."""
    opts = ["optim.epochs=2", "evaluation.eval_period_iterations=100"]
    results = train_then_evaluate(str(tmp_path / "demo"), opts, resume=False)
    (random_init, trained) = results.values()
    assert trained[20] >= random_init[20] + 10, format_results(results)
    assert (tmp_path / "demo" / "eval" / "training_99" / "teacher_checkpoint.pth").is_file()
    assert "points from self-supervised training" in format_results(results)


def test_features_demo_prints_shapes():
    out = subprocess.run(
        [sys.executable, "-m", "dinov2.demo", "features", "--registers"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
    ).stdout
    assert "cls token             (1, 384)" in out
    assert "patch tokens          (1, 352, 384)" in out
    assert "register tokens       (1, 4, 384)" in out
