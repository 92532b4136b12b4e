"""``python -m hieseg.study``: the command line of :mod:`hieseg.cli.study`."""

from hieseg.cli.study import main

if __name__ == "__main__":
    raise SystemExit(main())
