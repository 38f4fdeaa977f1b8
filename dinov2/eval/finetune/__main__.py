"""``python -m dinov2.eval.finetune`` (console script ``dinov2-finetune``): supervised fine-tuning of a backbone."""

import sys

from dinov2.eval.finetune.cli import cli_main

if __name__ == "__main__":
    sys.exit(cli_main())
