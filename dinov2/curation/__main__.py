"""``python -m dinov2.curation <step> ...`` (console script ``dinov2-curation``; see :mod:`dinov2.curation.cli`)."""

import sys

from dinov2.curation.cli import cli_main

if __name__ == "__main__":
    sys.exit(cli_main())
