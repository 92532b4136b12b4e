"""``python -m hieseg.qc``: the command line of :mod:`hieseg.cli.qc`."""

from hieseg.cli.qc import main

if __name__ == "__main__":
    raise SystemExit(main())
