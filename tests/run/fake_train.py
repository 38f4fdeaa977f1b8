"""A stand-in training entry point for the launcher tests: resumable, slow enough to be preempted.

It counts iterations up to ``iters=N`` (from the config overrides), checkpoints after each one
(atomically: temporary file, then rename) and resumes from its checkpoint unless ``--no-resume``.
Every start appends ``start <iteration> <pid>`` to ``progress.txt`` and writes its pid to ``pid``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from dinov2 import distributed


def main(args) -> dict:
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    overrides = dict(opt.split("=", 1) for opt in args.opts or [])
    total = int(overrides.get("iters", 10))
    checkpoint = output_dir / "checkpoint.json"
    start = 0
    if checkpoint.exists() and not args.no_resume:
        start = json.loads(checkpoint.read_text())["iteration"] + 1
    with open(output_dir / "progress.txt", "a") as f:
        f.write(f"start {start} {os.getpid()} world {distributed.get_global_size()}\n")
    (output_dir / "pid").write_text(str(os.getpid()))
    for iteration in range(start, total):
        time.sleep(float(overrides.get("sleep", 0.2)))
        tmp = checkpoint.with_suffix(".tmp")
        tmp.write_text(json.dumps({"iteration": iteration}))
        os.replace(tmp, checkpoint)
    return {"first_iteration": start, "last_iteration": total - 1, "output_dir": str(output_dir)}
