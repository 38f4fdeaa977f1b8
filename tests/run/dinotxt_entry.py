"""Launcher-test entry point: the real dino.txt trainer (``dinov2.train.dinotxt:main``) with the tiny hub backbone
of the text tests registered in the job process. It writes its pid to ``<output_dir>/pid`` so that a test can
preempt it."""

from __future__ import annotations

import os
from pathlib import Path

from dinov2.train.dinotxt import main as dinotxt_main
from tests.text.helpers import tiny_hub_backbone


def main(args):
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(args.output_dir) / "pid").write_text(str(os.getpid()))
    with tiny_hub_backbone():
        return dinotxt_main(args)
