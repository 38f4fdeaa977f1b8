"""``python -m dinov2.eval.transfer`` (console script ``dinov2-eval-transfer``)."""

import sys

from dinov2.eval.transfer.cli import cli_main

if __name__ == "__main__":
    sys.exit(cli_main())
