"""``python -m dinov2.eval.knn`` (console script ``dinov2-eval-knn``): the released k-NN command line."""

import sys

from dinov2.eval.knn.cli import cli_main

if __name__ == "__main__":
    sys.exit(cli_main())
