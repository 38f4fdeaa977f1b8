"""``python -m dinov2.eval.log_regression`` (console script ``dinov2-eval-log-regression``): the released
logistic-regression command line."""

import sys

from dinov2.eval.log_regression.cli import cli_main

if __name__ == "__main__":
    sys.exit(cli_main())
