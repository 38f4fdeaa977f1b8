"""``python -m dinov2.eval.zeroshot``: dino.txt zero-shot classification."""

import sys

from dinov2.eval.zeroshot.cli import cli_main

if __name__ == "__main__":
    sys.exit(cli_main())
