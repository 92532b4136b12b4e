"""Grand-challenge entry point: segment the one case under /input into /output (see --help)."""

import sys

from hieseg.cli.infer import main

if __name__ == "__main__":
    sys.exit(main())
