"""``python -m hieseg.bench``: the command line of :mod:`hieseg.cli.bench`."""

from hieseg.cli.bench import main

if __name__ == "__main__":
    raise SystemExit(main())
