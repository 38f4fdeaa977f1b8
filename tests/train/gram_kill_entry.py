"""``python -m tests.train.gram_kill_entry DATA_ROOT OUTPUT_DIR``: the tiny Gram-anchored two-resolution run of
``tests/train/gram_tiny.py``, slowed down after its first checkpoint so that a test can SIGKILL it mid-run."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tests.train.gram_tiny import high_res_cfg, train


class SlowAfterFirstCheckpoint(list):
    def append(self, item):
        super().append(item)
        if item[0] >= 3:  # the checkpoint of iteration 3 is written: leave time for the kill
            time.sleep(1.0)


if __name__ == "__main__":
    data_root, output_dir = (Path(arg) for arg in sys.argv[1:3])
    train(high_res_cfg(output_dir, data_root), history=SlowAfterFirstCheckpoint())
