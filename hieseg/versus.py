"""``python -m hieseg.versus``: the command line of :mod:`hieseg.cli.versus`, started by :mod:`hieseg.cli.startup`."""

from hieseg.cli.startup import run_command

if __name__ == "__main__":
    raise SystemExit(run_command("versus"))
