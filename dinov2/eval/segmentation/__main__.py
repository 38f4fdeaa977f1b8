"""``python -m dinov2.eval.segmentation``: see :mod:`dinov2.eval.segmentation.probe`."""

import sys

from dinov2.eval.segmentation.probe import get_args_parser, main

if __name__ == "__main__":
    main(get_args_parser().parse_intermixed_args())
    sys.exit(0)
