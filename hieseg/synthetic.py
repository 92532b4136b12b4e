"""``python -m hieseg.synthetic``: the command line of :mod:`hieseg.cli.synthetic`."""

from hieseg.cli.synthetic import main

if __name__ == "__main__":
    raise SystemExit(main())
