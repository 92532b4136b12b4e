"""``python -m hieseg.evaluate``: the command line of :mod:`hieseg.cli.evaluate`."""

from hieseg.cli.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
