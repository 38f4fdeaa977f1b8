"""``python -m dinov2.eval.depth``: see :mod:`dinov2.eval.depth.probe`."""

import sys

from dinov2.eval.depth.probe import get_args_parser, main

if __name__ == "__main__":
    main(get_args_parser().parse_intermixed_args())
    sys.exit(0)
