"""Launcher-test entry point: the real trainer (``dinov2.train.train:main``) with the tiny test arch registered.

It also writes its pid to ``<output_dir>/pid`` so that a test can preempt it.
"""

from __future__ import annotations

import os
from pathlib import Path

import tests.train.tiny  # noqa: F401  (registers the vit_test arch in this job process)
from dinov2.train.train import main as train_main


def main(args):
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(args.output_dir) / "pid").write_text(str(os.getpid()))
    return train_main(args)
