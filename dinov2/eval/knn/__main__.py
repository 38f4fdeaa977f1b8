"""``python -m dinov2.eval.knn``: the released k-NN command line."""

import sys

from dinov2.eval.knn.cli import get_args_parser, main

if __name__ == "__main__":
    sys.exit(main(get_args_parser(description="DINOv2 k-NN evaluation").parse_args()))
