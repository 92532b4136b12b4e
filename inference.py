"""Grand-challenge entry point: segment the one case under /input into /output (see --help)."""

import sys

from hieseg.inference_cli import main

if __name__ == "__main__":
    sys.exit(main())
