"""``python -m hieseg.evaluate``: the command line of :mod:`hieseg.cli.evaluate`, started by :mod:`hieseg.cli.startup`."""

from hieseg.cli.startup import run_command

if __name__ == "__main__":
    raise SystemExit(run_command("evaluate"))
