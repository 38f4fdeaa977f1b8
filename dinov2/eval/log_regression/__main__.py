"""``python -m dinov2.eval.log_regression``: the released logistic-regression command line."""

import sys

from dinov2.eval.log_regression.cli import get_args_parser, main

if __name__ == "__main__":
    sys.exit(main(get_args_parser(description="DINOv2 logistic regression evaluation").parse_args()))
