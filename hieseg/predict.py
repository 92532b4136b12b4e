"""``python -m hieseg.predict``: the command line of :mod:`hieseg.cli.predict`."""

from hieseg.cli.predict import main

if __name__ == "__main__":
    raise SystemExit(main())
