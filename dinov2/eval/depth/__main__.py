"""``python -m dinov2.eval.depth`` (console script ``dinov2-eval-depth``): see :mod:`dinov2.eval.depth.probe`."""

import sys

from dinov2.eval.depth.probe import cli_main

if __name__ == "__main__":
    sys.exit(cli_main())
