"""``python -m dinov2.eval.linear``: the released linear-evaluation command line."""

import sys

from dinov2.eval.linear.cli import get_args_parser, main

if __name__ == "__main__":
    sys.exit(main(get_args_parser(description="DINOv2 linear evaluation").parse_args()))
