"""``python -m dinov2.eval.linear`` (console script ``dinov2-eval-linear``): the released linear-evaluation command
line."""

import sys

from dinov2.eval.linear.cli import cli_main

if __name__ == "__main__":
    sys.exit(cli_main())
