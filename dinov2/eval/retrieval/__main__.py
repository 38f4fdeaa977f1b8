"""``python -m dinov2.eval.retrieval`` (console script ``dinov2-eval-retrieval``)."""

import sys

from dinov2.eval.retrieval.cli import cli_main

if __name__ == "__main__":
    sys.exit(cli_main())
