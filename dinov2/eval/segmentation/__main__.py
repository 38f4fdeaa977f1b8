"""``python -m dinov2.eval.segmentation`` (console script ``dinov2-eval-segmentation``): see
:mod:`dinov2.eval.segmentation.probe`."""

import sys

from dinov2.eval.segmentation.probe import cli_main

if __name__ == "__main__":
    sys.exit(cli_main())
