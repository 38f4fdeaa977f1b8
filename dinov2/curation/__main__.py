"""``python -m dinov2.curation <step> ...`` (see :mod:`dinov2.curation.cli`)."""

import sys

from dinov2.curation.cli import main

if __name__ == "__main__":
    main(sys.argv[1:])
