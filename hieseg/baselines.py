"""``python -m hieseg.baselines``: the command line of :mod:`hieseg.cli.baselines`."""

from hieseg.cli.baselines import main

if __name__ == "__main__":
    raise SystemExit(main())
