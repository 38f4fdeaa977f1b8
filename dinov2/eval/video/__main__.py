"""``python -m dinov2.eval.video`` (console script ``dinov2-eval-video``)."""

import sys

from dinov2.eval.video.cli import cli_main

if __name__ == "__main__":
    sys.exit(cli_main())
