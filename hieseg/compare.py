"""``python -m hieseg.compare``: the command line of :mod:`hieseg.cli.compare`."""

from hieseg.cli.compare import main

if __name__ == "__main__":
    raise SystemExit(main())
