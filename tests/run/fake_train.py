"""A stand-in training entry point for the launcher tests: resumable, slow enough to be preempted.

It counts iterations up to ``iters=N`` (from the config overrides), checkpoints after each one
(atomically: temporary file, then rename) and resumes from its checkpoint unless ``--no-resume``.
Every start appends ``start <iteration> <pid> world <size> sum <all-reduced rank + 1>`` to
``progress.txt`` (``progress_rank<r>.txt`` on other ranks) and writes its pid to ``pid``; only rank 0
checkpoints.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

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
    rank = distributed.get_global_rank()
    total_rank = torch.tensor([rank + 1.0])
    distributed.all_reduce(total_rank)
    suffix = f"_rank{rank}" if rank else ""
    with open(output_dir / f"progress{suffix}.txt", "a") as f:
        f.write(f"start {start} {os.getpid()} world {distributed.get_global_size()} sum {total_rank.item():g}\n")
    (output_dir / f"pid{suffix}").write_text(str(os.getpid()))
    for iteration in range(start, total):
        time.sleep(float(overrides.get("sleep", 0.2)))
        if rank:
            continue
        tmp = checkpoint.with_suffix(".tmp")
        tmp.write_text(json.dumps({"iteration": iteration}))
        os.replace(tmp, checkpoint)
    return {"first_iteration": start, "last_iteration": total - 1, "output_dir": str(output_dir)}
