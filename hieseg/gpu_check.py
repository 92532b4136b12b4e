"""``python -m hieseg.gpu_check``: the command line of :mod:`hieseg.cli.gpu_check`, started by :mod:`hieseg.cli.startup`."""

from hieseg.cli.startup import run_command

if __name__ == "__main__":
    raise SystemExit(run_command("gpu_check"))
